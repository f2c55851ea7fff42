// A TCP proxy the test can cut and restore, to make one process see its database go away while
// every other process (and test file) keeps using the real one. Or blackhole it: a path that
// silently stops delivering (a partition, a dead switch), where nothing fails fast.
import net from 'node:net';

export interface CuttableProxy {
  port: number;
  /** Listening (not cut). */
  readonly open: boolean;
  /** Closes every connection and stops listening: the dependency refuses connections. */
  cut(): Promise<void>;
  /** Listens on the same port again (retried for up to 10 s if another process took it meanwhile). */
  restore(): Promise<void>;
  /**
   * Keeps accepting connections and bytes in both directions but delivers nothing, and no
   * connection fails: what a client sees of a network that silently drops packets.
   */
  blackhole(): void;
  /** Delivers what the blackhole held, in order, and forwards again: the partition healed (TCP retransmits). */
  lift(): void;
  close(): Promise<void>;
}

interface Pipe { from: net.Socket; to: net.Socket; held: Buffer[] }

export async function cuttableProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<CuttableProxy> {
  const sockets = new Set<net.Socket>();
  const pipes = new Set<Pipe>();
  let holding = false;
  let server: net.Server | undefined;
  let port = 0;
  const forward = (from: net.Socket, to: net.Socket) => {
    const pipe: Pipe = { from, to, held: [] };
    pipes.add(pipe);
    from.on('data', (chunk: Buffer) => { if (holding) pipe.held.push(chunk); else to.write(chunk); });
    from.on('close', () => pipes.delete(pipe));
  };
  const listenOnce = () => new Promise<void>((resolve, reject) => {
    const created = net.createServer((client) => {
      const upstream = net.connect(targetPort, targetHost);
      sockets.add(client); sockets.add(upstream);
      forward(client, upstream);
      forward(upstream, client);
      const drop = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
      client.on('error', drop); upstream.on('error', drop); client.on('close', drop); upstream.on('close', drop);
    });
    created.once('error', reject);
    created.listen(port, '127.0.0.1', () => {
      created.off('error', reject);
      created.on('error', () => undefined);
      server = created;
      port = (created.address() as net.AddressInfo).port;
      resolve();
    });
  });
  const listen = async () => {
    if (server) return;
    for (let attempt = 1; ; attempt++) {
      try { await listenOnce(); return; } catch (err) {
        if (attempt >= 50) throw new Error(`the proxy could not listen on ${port} again: ${(err as Error).message}`, { cause: err });
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  await listen();
  const stop = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    if (server) server.close(() => resolve()); else resolve();
    server = undefined;
  });
  return {
    get port() { return port; },
    get open() { return server !== undefined; },
    cut: stop,
    restore: listen,
    blackhole() { holding = true; },
    lift() {
      holding = false;
      for (const pipe of pipes) {
        for (const chunk of pipe.held.splice(0)) if (!pipe.to.destroyed) pipe.to.write(chunk);
      }
    },
    close: stop,
  };
}
