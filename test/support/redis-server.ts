// A redis-server of the caller's own, on a free port, for tests, the chaos run and the bench when
// they make Redis busy, lose its state or fail it: never the shared one. Nothing is kept on disk, so
// SIGKILL and start again loses every key.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './ports.ts';

export interface OwnRedis {
  port: number;
  url: string;
  /** Whether the server is up (started and not killed since). */
  readonly running: boolean;
  client(): Redis;
  /** Starts the server (again) on the same port: empty. */
  start(): Promise<void>;
  /** SIGKILL: whatever the server held is gone. */
  kill(): Promise<void>;
  /** SIGKILL and start again: everything is lost, as on the project's machines. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface OwnRedisOptions {
  /** More redis-server arguments. */
  args?: string[];
  /** The server's working directory, and its log file there (redis.log); else no log. */
  dir?: string;
  /** Start it now (default), or leave that to `start()`. */
  started?: boolean;
}

export async function startOwnRedis(opts: OwnRedisOptions | string[] = {}): Promise<OwnRedis> {
  const o: OwnRedisOptions = Array.isArray(opts) ? { args: opts } : opts;
  const port = await freePort();
  let child: ChildProcess | undefined;
  const clients: Redis[] = [];
  const start = async () => {
    const where = o.dir ? ['--dir', o.dir, '--logfile', join(o.dir, 'redis.log')] : [];
    const started = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--daemonize', 'no', '--save', '', '--appendonly', 'no', ...where, ...(o.args ?? [])], { stdio: 'ignore' });
    child = started;
    started.once('exit', () => { if (child === started) child = undefined; });
    for (let i = 0; i < 400; i++) {
      const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => undefined);
      try { await probe.connect(); await probe.ping(); probe.disconnect(); return; } catch { probe.disconnect(); }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server on port ${port} did not answer PING within 20 s`);
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = once(c, 'exit');
    c.kill('SIGKILL');
    await exited;
  };
  if (o.started !== false) await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    get running() { return child !== undefined; },
    client() {
      // No ready check: it would be refused (BUSY) while a test keeps the server busy on purpose.
      const c = new Redis(port, '127.0.0.1', { enableReadyCheck: false });
      c.on('error', () => undefined);
      clients.push(c);
      return c;
    },
    start,
    kill,
    async restart() { await kill(); await start(); },
    async stop() { for (const c of clients) c.disconnect(); await kill(); },
  };
}
