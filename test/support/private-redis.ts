// A redis-server of the test's own, on a free port, keeping nothing on disk: for tests that count
// commands, read SLOWLOG or flush everything, which must never happen on the shared Redis.
import type { Redis } from 'ioredis';
import { startOwnRedis } from './redis-server.ts';

export interface PrivateRedis { url: string; port: number; client: Redis; stop(): Promise<void> }

/** A redis-server of the test's own (test/support/redis-server.ts) with one client, ready. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const server = await startOwnRedis(['--maxmemory-policy', 'noeviction']);
  const client = server.client();
  await client.ping();
  return { url: server.url, port: server.port, client, stop: () => server.stop() };
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
