// One port, h2c and HTTP/1.1, serving gRPC, gRPC-Web and Connect (connect-node adapter). Graceful
// close: stop accepting, let in-flight calls finish within the grace period, then cut what is left.
import http from 'node:http';
import http2 from 'node:http2';
import net, { type Socket } from 'node:net';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { ConnectRouter, Interceptor } from '@connectrpc/connect';
import type { Logger } from '../log.ts';

export interface HttpServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
  log: Logger;
}

export interface RunningServer {
  /** The bound address (port 0 in options picks a free one). */
  readonly host: string;
  readonly port: number;
  readonly url: string;
  close(graceMs: number): Promise<void>;
}

export async function listen(opts: HttpServerOptions): Promise<RunningServer> {
  const handler = connectNodeAdapter({
    routes: opts.routes,
    interceptors: opts.interceptors ?? [],
    readMaxBytes: opts.maxMessageBytes,
    writeMaxBytes: opts.maxMessageBytes * 16,
  });
  let inFlight = 0;
  let drained: (() => void) | undefined;
  const track = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    inFlight++;
    res.once('close', () => {
      inFlight--;
      if (inFlight === 0) drained?.();
    });
    handler(req, res);
  };
  // Node's allowHTTP1 only applies to TLS (ALPN). For cleartext, look at the first bytes: HTTP/2
  // prior knowledge starts with the connection preface "PRI * HTTP/2.0"; anything else is HTTP/1.x.
  const h2 = http2.createServer({}, track);
  const h1 = http.createServer(track);
  h1.keepAliveTimeout = 65_000;
  const server = net.createServer((socket) => {
    socket.once('readable', () => {
      const head = socket.read() as Buffer | null;
      if (head === null) return;
      socket.unshift(head);
      (head.subarray(0, 3).toString('latin1') === 'PRI' ? h2 : h1).emit('connection', socket);
    });
  });
  const sessions = new Set<http2.Http2Session>();
  const sockets = new Set<Socket>();
  h2.on('session', (s) => { sessions.add(s); s.once('close', () => sessions.delete(s)); });
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)); });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => { server.off('error', reject); resolve(); });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  const url = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;

  return {
    host: opts.host,
    port,
    url,
    async close(graceMs: number) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      h1.closeIdleConnections();
      // GOAWAY: clients stop opening streams on these sessions; open streams run to completion.
      for (const s of sessions) s.close();
      const idle = inFlight === 0 ? Promise.resolve() : new Promise<void>((resolve) => { drained = resolve; });
      const timedOut = await Promise.race([idle.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), graceMs).unref())]);
      if (timedOut) opts.log.warn({ inFlight }, 'grace period over; closing remaining connections');
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
