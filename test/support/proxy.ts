// A TCP proxy the test can cut and restore, to make one process see its database go away while
// every other process (and test file) keeps using the real one. Or blackhole it: a path that
// silently stops delivering (a partition, a dead switch), where nothing fails fast.
import net from 'node:net';

export interface CuttableProxy {
  port: number;
  /** Closes every connection and stops listening: the dependency refuses connections. */
  cut(): Promise<void>;
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
  const listen = () => new Promise<void>((resolve) => {
    server = net.createServer((client) => {
      const upstream = net.connect(targetPort, targetHost);
      sockets.add(client); sockets.add(upstream);
      forward(client, upstream);
      forward(upstream, client);
      const drop = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
      client.on('error', drop); upstream.on('error', drop); client.on('close', drop); upstream.on('close', drop);
    });
    server.listen(port, '127.0.0.1', () => {
      port = (server!.address() as net.AddressInfo).port;
      resolve();
    });
  });
  await listen();
  const stop = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    if (server) server.close(() => resolve()); else resolve();
    server = undefined;
  });
  return {
    get port() { return port; },
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
