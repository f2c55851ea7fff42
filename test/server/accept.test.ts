// How coupon-api accepts connections. libuv accepts one connection per listening socket per
// event-loop turn, so with one socket a burst of new connections during a sale waited in the
// kernel's accept queue for one busy turn each: seconds for the last of 256 (the HTTP/1.1 tail).
// coupon-api listens on API_ACCEPT_SOCKETS sockets per process (SO_REUSEPORT) and, with
// workers, every worker listens itself instead of the primary handing sockets over one by one.
// These tests check that shape through what an operator sees (the sockets, the answers, the start
// errors); the latency it buys is measured by `npm run bench`, not asserted here.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, startService, type ServiceProcess } from '../support/processes.ts';
import { reservePort } from '../../src/server/http.ts';
import { withLocalAuth } from '../../scripts/local-auth.ts';

/** The listening TCP sockets on `port`, as socket inodes per pid among `pids` (Linux: /proc). */
function listenersByPid(port: number, pids: number[]): Map<number, number> {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // st 0A = LISTEN
      if (cols.length > 9 && parseInt(cols[1]!.split(':')[1]!, 16) === port && cols[3] === '0A') inodes.add(cols[9]!);
    }
  }
  return new Map(pids.map((pid) => [pid, readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try { return inodes.has(/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? ''); } catch { return false; }
  }).length]));
}

/** `n` connections opened at once, each sending one Connect JSON health check; their HTTP statuses. */
async function burst(port: number, n: number): Promise<string[]> {
  const body = '{}';
  const request = `POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
  return Promise.all(Array.from({ length: n }, () => new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(request));
    let answer = '';
    socket.on('data', (d: Buffer) => { answer += d.toString('latin1'); });
    socket.on('end', () => resolve(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? `no status: ${answer.slice(0, 40)}`));
    socket.on('error', reject);
  })));
}

describe('coupon-api in one process (API_WORKERS=1)', () => {
  let api: ServiceProcess;
  beforeAll(async () => {
    api = await startService('api', { API_WORKERS: '1', API_ACCEPT_SOCKETS: '8' });
  }, 120_000);
  afterAll(async () => { await api?.stop(); });

  it('listens on API_ACCEPT_SOCKETS sockets of the one port, and answers a burst of 300 new connections', async () => {
    const port = Number(api.address.split(':')[1]);
    expect(listenersByPid(port, [api.child.pid!])).toEqual(new Map([[api.child.pid!, 8]]));
    const statuses = await burst(port, 300);
    expect(statuses.filter((s) => s !== '200')).toEqual([]);
  });

  it('refuses to start on a port another coupon-api already listens on, naming the port, instead of sharing it', async () => {
    const port = api.address.split(':')[1]!;
    const env = await withLocalAuth({ API_WORKERS: '1', API_PORT: port, API_METRICS_PORT: '0', LOG_LEVEL: 'info', LOG_PRETTY: 'false' });
    const second = await run(process.execPath, ['src/bin/api.ts'], env);
    expect(second.code).toBe(1);
    expect(second.stdout).toContain('EADDRINUSE');
    expect(second.stdout).toContain(`:${port}`);
    // The first one still has every socket, and answers.
    expect(listenersByPid(Number(port), [api.child.pid!]).get(api.child.pid!)).toBe(8);
    expect(await burst(Number(port), 5)).toEqual(['200', '200', '200', '200', '200']);
  });
});

describe('coupon-api with API_WORKERS=2', () => {
  let api: ServiceProcess;
  beforeAll(async () => {
    api = await startService('api', { API_WORKERS: '2', API_ACCEPT_SOCKETS: '4' });
  }, 120_000);
  afterAll(async () => { await api?.stop(); });

  it('each worker listens on its own sockets and the primary on none, so no connection waits for the primary to hand it over', async () => {
    const port = Number(api.address.split(':')[1]);
    const workers = api.logs.filter((l) => l.msg === 'worker listening').map((l) => Number(l.pid));
    expect(workers).toHaveLength(2);
    expect(listenersByPid(port, [api.child.pid!, ...workers])).toEqual(new Map([[api.child.pid!, 0], [workers[0]!, 4], [workers[1]!, 4]]));
    const statuses = await burst(port, 300);
    expect(statuses.filter((s) => s !== '200')).toEqual([]);
  });
});

describe('API_PORT=0', () => {
  it('picks a free port below the kernel\'s ephemeral range, which no outgoing connection can take before the workers bind it', async () => {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    for (let i = 0; i < 20; i++) {
      const port = await reservePort('127.0.0.1', 0);
      expect(port).toBeGreaterThanOrEqual(10_000);
      expect(port).toBeLessThan(low);
      // Free: it binds.
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen({ host: '127.0.0.1', port }, resolve));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
