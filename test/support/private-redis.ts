// A redis-server of the test's own, on a free port, keeping nothing on disk: for tests that count
// commands, read SLOWLOG or flush everything, which must never happen on the shared Redis.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { Redis } from 'ioredis';

export interface PrivateRedis { url: string; port: number; client: Redis; stop(): Promise<void> }

const freePort = () => new Promise<number>((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => { const { port } = s.address() as net.AddressInfo; s.close(() => resolve(port)); });
});

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' });
  const exited = once(child, 'exit');
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  // Refused connections while the server starts are expected; the loop below retries them.
  const quiet = () => undefined;
  client.on('error', quiet);
  for (let i = 0; ; i++) {
    try { await client.connect(); await client.ping(); break; } catch (err) {
      if (i > 100) throw err;
      client.disconnect();
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  client.off('error', quiet);
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    client,
    async stop() {
      client.disconnect();
      if (child.exitCode === null) { child.kill('SIGTERM'); await exited; }
    },
  };
}

/** CPU seconds the server has used (user + system): its work, however busy the machine is. */
export async function serverCpuSeconds(client: Redis): Promise<number> {
  const info = await client.info('cpu');
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return field('used_cpu_user') + field('used_cpu_sys');
}

/** Every command Redis logged in SLOWLOG (set slowlog-log-slower-than 0 first): duration and argument count. */
export async function slowlog(client: Redis): Promise<{ micros: number; args: number; command: string }[]> {
  const entries = (await client.call('SLOWLOG', 'GET', '-1')) as [number, number, number, (string | Buffer)[]][];
  return entries.map(([, , micros, args]) => {
    // SLOWLOG keeps 32 arguments at most; the last then says how many more there were.
    const more = /^\.\.\. \((\d+) more arguments\)$/.exec(String(args.at(-1)));
    return { micros, args: more ? args.length - 1 + Number(more[1]) : args.length, command: String(args[0]).toLowerCase() };
  });
}
