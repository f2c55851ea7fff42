// A redis-server of the test's own, on a free port, for tests that make Redis busy, lose its
// state or fail: never the shared one. Nothing is kept on disk.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { freePort } from './ports.ts';

export interface OwnRedis { port: number; url: string; client(): Redis; restart(): Promise<void>; stop(): Promise<void> }


export async function startOwnRedis(extraArgs: string[] = []): Promise<OwnRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const clients: Redis[] = [];
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs], { stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => undefined);
      try { await probe.connect(); await probe.ping(); probe.disconnect(); return; } catch { probe.disconnect(); }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server on port ${port} did not start`);
  };
  const kill = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    client() {
      // No ready check: it would be refused (BUSY) while a test keeps the server busy on purpose.
      const c = new Redis(port, '127.0.0.1', { enableReadyCheck: false });
      c.on('error', () => undefined);
      clients.push(c);
      return c;
    },
    /** SIGKILL and start again: everything is lost, as on the project's machines. */
    async restart() { await kill(); await start(); },
    async stop() { for (const c of clients) c.disconnect(); await kill(); },
  };
}
