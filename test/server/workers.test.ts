// coupon-api with API_WORKERS=2: node:cluster workers on one port, the primary replacing a worker
// that dies, draining them all on SIGTERM, and no worker outliving a killed primary.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';

const alive = (pid: number) => {
  try { process.kill(pid, 0); return true; } catch { return false; }
};

async function until(check: () => boolean, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Which of `pids` hold an established connection on local `port` (Linux: /proc). */
function pidsServing(port: number, pids: number[]): number[] {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && parseInt(cols[1]!.split(':')[1]!, 16) === port && cols[3] === '01') inodes.add(cols[9]!);
    }
  }
  return pids.filter((pid) => readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try { return inodes.has(/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? ''); } catch { return false; }
  }));
}

const workerPids = (api: ServiceProcess) => api.logs.filter((l) => l.msg === 'worker listening').map((l) => Number(l.pid));

/** Calls over fresh connections (the kernel hands each to one of the workers' sockets). */
async function issueOver(address: string, couponId: string, users: string[], connections: number, whileOpen?: () => void) {
  const clients = Array.from({ length: connections }, () => couponClient(address, true));
  try {
    return await Promise.all(users.map((userId, i) => clients[i % connections]!.issueCoupon({ couponId, userId }, { timeoutMs: 30_000 })
      .then((res) => ({ userId, ok: true as const, seq: Number(res.seq) }))
      .catch((err: unknown) => ({ userId, ok: false as const, reason: (err as { reason?: string }).reason }))))
      .finally(whileOpen);
  } finally { clients.forEach((c) => c.close()); }
}

describe('coupon-api with API_WORKERS=2', () => {
  let api: ServiceProcess;
  let client: CouponClient;
  beforeAll(async () => {
    api = await startService('api', { API_WORKERS: '2', PUBLISH_TIMEOUT_MS: '30000', RECOVERY_STALE_MS: '60000' });
    client = couponClient(api.address, true);
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await api?.kill();
  });

  it('prints one ready line, after two workers listen on the same port', () => {
    const ready = api.logs.filter((l) => l.msg === 'coupon-api listening');
    expect(ready).toHaveLength(1);
    expect(ready[0]).toMatchObject({ workers: 2 });
    expect(Number(ready[0]!.metricsPort)).toBeGreaterThan(0);
    const workers = api.logs.filter((l) => l.msg === 'worker listening');
    expect(workers).toHaveLength(2);
    for (const w of workers) expect(w.port).toBe(ready[0]!.port);
    expect(new Set(workerPids(api)).size).toBe(2);
  });

  it('grants exactly the quantity through both workers over several connections', { timeout: 60_000 }, async () => {
    const coupon = await createCoupon(client, 20);
    const users = Array.from({ length: 60 }, (_, i) => `worker-user-${i}`);
    // Each user twice: a repeat must get its own seq back, whichever worker answers.
    let serving: number[] = [];
    const results = await issueOver(api.address, coupon.id, [...users, ...users], 24, () => {
      serving = process.platform === 'linux' ? pidsServing(Number(api.address.split(':')[1]), workerPids(api)) : workerPids(api);
    });
    // The kernel spreads new connections over every worker's sockets (SO_REUSEPORT): with 24 of
    // them, both workers answered some of these calls (all on one: a chance of 2 in 2^24).
    expect(serving.sort()).toEqual(workerPids(api).sort());
    const seqs = new Map<string, Set<number>>();
    for (const r of results) {
      if (r.ok) seqs.set(r.userId, (seqs.get(r.userId) ?? new Set()).add(r.seq));
      else expect(r.reason).toBe('COUPON_SOLD_OUT');
    }
    expect(seqs.size).toBe(20);
    for (const s of seqs.values()) expect(s.size).toBe(1);
    expect([...seqs.values()].map((s) => [...s][0]!).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect((await client.getCoupon({ couponId: coupon.id })).coupon!.acceptedCount).toBe(20n);
  });

  it('replaces a worker killed with SIGKILL, and calls keep succeeding', { timeout: 90_000 }, async () => {
    const [victim, survivor] = workerPids(api);
    process.kill(victim!, 'SIGKILL');
    await api.waitForLog('worker died; forking a replacement', 10_000);
    await until(() => workerPids(api).length === 3, 60_000, 'a replacement worker listening');
    const replacement = workerPids(api)[2]!;
    expect(replacement).not.toBe(victim);
    expect(alive(survivor!)).toBe(true);
    expect(alive(victim!)).toBe(false);

    const coupon = await createCoupon(client, 10);
    const results = await issueOver(api.address, coupon.id, Array.from({ length: 10 }, (_, i) => `after-kill-${i}`), 4);
    expect(results.filter((r) => r.ok)).toHaveLength(10);
  });
});

describe('coupon-api primary lifecycle', () => {
  it('SIGTERM to the primary drains every worker and exits 0', { timeout: 120_000 }, async () => {
    const api = await startService('api', { API_WORKERS: '2' });
    const pids = workerPids(api);
    expect(pids).toHaveLength(2);
    expect(await api.stop('SIGTERM')).toBe(0);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(api.logs.filter((l) => l.msg === 'shut down cleanly').length).toBe(3);
  });

  it('SIGKILL of the primary takes the workers down within seconds', { timeout: 120_000 }, async () => {
    const api = await startService('api', { API_WORKERS: '2' });
    const pids = workerPids(api);
    expect(pids).toHaveLength(2);
    await api.kill();
    await until(() => pids.every((pid) => !alive(pid)), 5_000, `workers ${pids.join(', ')} exit after their primary`);
  });
});
