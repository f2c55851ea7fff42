// One port, h2c and HTTP/1.1, serving gRPC, gRPC-Web and Connect (connect-es's handlers through
// node-adapter.ts).
//
// Hostile connections (docs/design.md#fault-model) must neither crash the process nor starve other
// callers: every socket has an error listener from its first moment, a connection must show its
// protocol within a deadline, HTTP/1.1 headers and requests are timed, idle connections are closed,
// and HTTP/2 sessions are bounded in streams, memory and resets (docs/api.md#connections-timeouts-and-limits).
//
// Graceful close: stop accepting, let in-flight calls finish within the grace period, then cut what
// is left.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import type { ConnectRouter, Interceptor } from '@connectrpc/connect';
import type { Logger } from '../log.ts';
import { completeTransportErrors, strictJson, unknownMethod } from './interceptors.ts';
import { ACCEPT_COMPRESSION, nodeAdapter } from './node-adapter.ts';
import { shortPath, type ShortPathMethod } from './short-path.ts';

export interface ConnectionLimits {
  /** A new connection must show its protocol (a first byte, or the whole HTTP/2 preface) within this. */
  firstByteTimeoutMs: number;
  /** HTTP/1.1: a request's headers must be complete within this (slowloris). */
  headersTimeoutMs: number;
  /** HTTP/1.1: a whole request, body included, within this. At least `headersTimeoutMs`. */
  requestTimeoutMs: number;
  /** An HTTP/1.1 keep-alive connection between requests, or an HTTP/2 session with no open stream, is closed after this. */
  idleTimeoutMs: number;
  /** Open connections at most; further ones are closed as soon as they are accepted. */
  maxConnections: number;
  /** HTTP/2 streams one session may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number;
  /** HTTP/2: memory one session may use, in megabytes, before new streams are refused. */
  maxSessionMemoryMb: number;
}

/** TLS on the API port (PEM contents). With `clientCa`, callers must present a certificate it signed (mutual TLS). */
export interface TlsSettings { cert: Buffer; key: Buffer; clientCa?: Buffer | undefined }

export interface HttpServerOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  limits: ConnectionLimits;
  /** Unset: cleartext (h2c and HTTP/1.1 told apart by the first bytes). Set: TLS, protocol by ALPN. */
  tls?: TlsSettings | undefined;
  /**
   * Listening sockets on the port in this process (SO_REUSEPORT; default 1). libuv accepts one
   * connection per socket per event-loop turn, so under load a burst of new connections waits in
   * the kernel's accept queue for as many turns as there are connections; N sockets take N per turn.
   */
  acceptSockets?: number;
  /**
   * Join sockets already listening on the port (cluster workers, which share it through
   * SO_REUSEPORT) instead of first checking that nothing else listens there.
   */
  sharedPort?: boolean;
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
  /** Methods whose Connect JSON and gRPC calls take the short path (short-path.ts). */
  shortPath?: ShortPathMethod[];
  log: Logger;
}

export interface RunningServer {
  /** The bound address (port 0 in options picks a free one). */
  readonly host: string;
  readonly port: number;
  readonly url: string;
  close(graceMs: number): Promise<void>;
}

/** What an HTTP/2 prior-knowledge client sends first (RFC 9113 §3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * HTTP/2 abuse limits. These are Node's defaults, pinned so that an upgrade cannot drop them
 * unnoticed; test/server/connections.test.ts checks them with clients that ignore GOAWAY.
 * - Rapid reset (CVE-2023-44487): Node counts a stream the client has reset as open until its
 *   JavaScript side is torn down, so a client that opens and cancels streams in a loop soon runs
 *   past maxConcurrentStreams (which is why that limit matters here). Its further streams are
 *   refused (ENHANCE_YOUR_CALM), and after more than `maxSessionRejectedStreams` refusals in a row
 *   the session ends. Independently, nghttp2 sends GOAWAY to a client that resets more than
 *   `streamResetBurst` streams, refilled at `streamResetRate` a second.
 * - Garbage: after `maxSessionInvalidFrames` invalid frames the session ends.
 */
const HTTP2_ABUSE_LIMITS = {
  maxSessionRejectedStreams: 100,
  maxSessionInvalidFrames: 1_000,
  streamResetBurst: 1_000,
  streamResetRate: 33,
} as const;

/**
 * 'h2' once the bytes are the whole HTTP/2 preface, 'h1' as soon as they cannot be its start, and
 * undefined while they still could be (a preface split across packets, or a client dripping it).
 */
function protocolOf(head: Buffer): 'h1' | 'h2' | undefined {
  if (head.length === 0) return undefined;
  const n = Math.min(head.length, PREFACE.length);
  if (!head.subarray(0, n).equals(PREFACE.subarray(0, n))) return 'h1';
  return head.length >= PREFACE.length ? 'h2' : undefined;
}

export async function listen(opts: HttpServerOptions): Promise<RunningServer> {
  const { limits, log } = opts;
  const handler = nodeAdapter({
    routes: opts.routes,
    interceptors: opts.interceptors ?? [],
    readMaxBytes: opts.maxMessageBytes,
    writeMaxBytes: opts.maxMessageBytes * 16,
    requestGate: completeTransportErrors(opts.log),
    jsonOptions: strictJson,
    fallback: unknownMethod,
    shortPath: opts.shortPath?.length
      ? shortPath({ methods: opts.shortPath, interceptors: opts.interceptors ?? [], readMaxBytes: opts.maxMessageBytes, acceptCompression: ACCEPT_COMPRESSION, jsonOptions: strictJson })
      : undefined,
    log: opts.log,
  });
  let inFlight = 0;
  let drained: (() => void) | undefined;
  let closing = false;
  const track = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => {
    inFlight++;
    res.once('close', () => {
      inFlight--;
      if (inFlight === 0) drained?.();
    });
    handler(req, res);
  };

  const h2 = http2.createServer({
    settings: { maxConcurrentStreams: limits.maxConcurrentStreams },
    maxSessionMemory: limits.maxSessionMemoryMb,
    ...HTTP2_ABUSE_LIMITS,
  }, track);
  const h1 = http.createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    // How often Node looks for requests past those timeouts (its default, 30 s, would let a 10 s
    // headers timeout stretch to 40 s).
    connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 2))),
  }, track);
  // Node enforces headersTimeout and requestTimeout, and tracks connections for
  // closeIdleConnections(), only from an http.Server's 'listening' event. This one never listens
  // itself (the net server below hands it sockets), so start that tracking here. Node's default
  // 'clientError' handling stays: it answers 400, 408 or 431 and closes the socket.
  h1.emit('listening');

  // Every accepted socket gets an error listener at once: a reset or a vanished client is an
  // 'error' on it, and without a listener it would crash the process. h1 and h2 add their own
  // listeners once they own the socket.
  const guard = (socket: Socket) => socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ code: err.code, err: err.message }, 'connection error'));

  // API_MAX_CONNECTIONS over every listening socket of this process: beyond it, a new connection is
  // closed as soon as it is accepted (what net.Server's maxConnections does for one socket).
  const sockets = new Set<Socket>();
  let dropped = 0;
  const admit = (socket: Socket): boolean => {
    if (sockets.size >= limits.maxConnections) {
      socket.destroy();
      // Once a second at most: a flood of refused connections must not become a flood of log lines.
      if (dropped++ === 0) {
        setTimeout(() => {
          log.warn({ dropped, maxConnections: limits.maxConnections }, 'refused connections: API_MAX_CONNECTIONS reached');
          dropped = 0;
        }, 1_000).unref();
      }
      return false;
    }
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    return true;
  };

  // Cleartext: Node's allowHTTP1 only applies to TLS (ALPN), so look at the first bytes: HTTP/2
  // prior knowledge starts with the connection preface; anything else is HTTP/1.x.
  const cleartext = () => net.createServer((socket) => {
    guard(socket);
    if (!admit(socket)) return;
    const deadline = setTimeout(() => {
      log.debug({ remote: socket.remoteAddress }, 'closing a connection that sent no request in time');
      socket.destroy();
    }, limits.firstByteTimeoutMs).unref();
    socket.once('close', () => clearTimeout(deadline));
    let head = Buffer.alloc(0);
    const sniff = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) head = Buffer.concat([head, chunk]);
      const protocol = protocolOf(head);
      if (protocol === undefined) return;
      socket.off('readable', sniff);
      clearTimeout(deadline);
      socket.unshift(head);
      (protocol === 'h2' ? h2 : h1).emit('connection', socket);
    };
    socket.on('readable', sniff);
  });

  // TLS: the handshake must finish within the first-byte deadline, ALPN picks HTTP/2 or HTTP/1.1,
  // and with a client CA a caller without a certificate it signed never gets past the handshake.
  const secure = (t: TlsSettings) => {
    const s = tls.createServer({
      cert: t.cert, key: t.key,
      ALPNProtocols: ['h2', 'http/1.1'],
      handshakeTimeout: limits.firstByteTimeoutMs,
      ...(t.clientCa ? { ca: t.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
    }, (socket) => {
      guard(socket);
      (socket.alpnProtocol === 'h2' ? h2 : h1).emit('connection', socket);
    });
    s.on('connection', (socket: Socket) => { guard(socket); admit(socket); });
    s.on('tlsClientError', (err: NodeJS.ErrnoException, socket) => log.debug({ code: err.code, err: err.message, remote: socket.remoteAddress }, 'TLS handshake refused'));
    return s;
  };
  const count = Math.max(1, opts.acceptSockets ?? 1);
  const servers: net.Server[] = Array.from({ length: count }, () => {
    const server = opts.tls ? secure(opts.tls) : cleartext();
    // After listening, an 'error' here is a failed accept (EMFILE, ENFILE: out of file descriptors).
    // The server keeps listening, so it is worth a log line, never a crash.
    server.on('error', (err) => log.error({ err }, 'accepting a connection failed'));
    return server;
  });

  const sessions = new Set<http2.Http2Session>();
  h2.on('session', (session) => {
    sessions.add(session);
    // Idle means no open stream, however many frames (PING, SETTINGS, half a HEADERS) arrive: a
    // long-lived stream such as a Health Watch keeps its session, a session that only chatters does not.
    let openStreams = 0;
    let idle: NodeJS.Timeout | undefined;
    const armIdle = () => {
      idle = setTimeout(() => {
        log.debug({ remote: session.socket?.remoteAddress }, 'closing an idle HTTP/2 session');
        session.close(); // GOAWAY; with no stream open, the connection goes at once
      }, limits.idleTimeoutMs).unref();
    };
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      openStreams++;
      clearTimeout(idle);
      stream.once('close', () => {
        openStreams--;
        if (openStreams === 0 && !session.closed && !session.destroyed) armIdle();
      });
    });
    session.once('close', () => {
      clearTimeout(idle);
      sessions.delete(session);
    });
    if (closing) session.close();
    else armIdle();
  });
  h2.on('sessionError', (err: NodeJS.ErrnoException) => log.debug({ code: err.code, err: err.message }, 'HTTP/2 session error'));

  const port = await listenAll(servers, opts.host, opts.port, opts.sharedPort === true);
  const url = `${opts.tls ? 'https' : 'http'}://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;

  return {
    host: opts.host,
    port,
    url,
    async close(graceMs: number) {
      closing = true;
      const closed = Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
      // Closes idle keep-alive connections and stops the header and request timeout checks.
      h1.close();
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

/** Listens on host:port once (resolving the port), failing as net.Server.listen does. */
function listenOnce(server: net.Server, options: net.ListenOptions): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : options.port ?? 0);
    });
  });
}

/**
 * Checks that nothing listens on host:port (a plain bind, so another process's SO_REUSEPORT group
 * is refused too, as one socket would be) and returns the port, a free one for port 0. The check
 * closes at once: between it and the real bind another process could take the port, which for a
 * fixed port fails that bind, and for port 0 is vanishingly unlikely.
 */
export async function reservePort(host: string, port: number): Promise<number> {
  if (port !== 0) return probePort(host, port);
  // Port 0: a free port below the kernel's ephemeral range. The port is free only when checked,
  // and the sockets that bind it come a moment later (in workers: much later); a port from the
  // ephemeral range can be taken meanwhile by any outgoing connection of any process (seen in CI).
  const below = ephemeralLow() - 1;
  for (let attempt = 0; attempt < 50; attempt++) {
    const candidate = 10_000 + Math.floor(Math.random() * (below - 10_000));
    try {
      return await probePort(host, candidate);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  return probePort(host, 0);
}

async function probePort(host: string, port: number): Promise<number> {
  const probe = net.createServer();
  const bound = await listenOnce(probe, { host, port, exclusive: true });
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return bound;
}

/** The lowest port the kernel hands out for outgoing connections (Linux; 32768 elsewhere). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 11_000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/**
 * Binds every server on host:port. One server listens as usual. Several share the port through
 * SO_REUSEPORT (the kernel spreads new connections over them), `exclusive` so that a cluster worker
 * binds its own sockets instead of asking the primary for a shared one. Unless `shared`, the port
 * is first checked free, so a second coupon-api on a taken port fails as it would with one socket.
 */
async function listenAll(servers: net.Server[], host: string, port: number, shared: boolean): Promise<number> {
  if (servers.length === 1 && !shared) return listenOnce(servers[0]!, { host, port });
  const at = shared ? port : await reservePort(host, port);
  const listening: net.Server[] = [];
  try {
    for (const server of servers) {
      await listenOnce(server, { host, port: at, reusePort: true, exclusive: true });
      listening.push(server);
    }
  } catch (err) {
    await Promise.all(listening.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    throw err;
  }
  return at;
}
