// `npm run bench -- sold-out`: what a sold-out sale's refusals cost Redis, with the in-process
// sold-out view (docs/decisions/0006-sold-out-view-in-process.md) and without it, in one run.
// coupon-api runs as `npm start` runs it (API_WORKERS workers, JWT auth) on a redis-server of the
// bench's own, so INFO commandstats counts only this sale. Per setting it prints the Redis commands
// per refused IssueCoupon and the share of refusals answered in process: counts, not timings, so
// those figures hold on a busy machine too. Then, per setting, what a refusal costs coupon-api's CPU
// over Connect JSON (wrk, a distinct late user per call) and over gRPC (h2load, a few users
// repeating), the figures the sizing in docs/scaling.md rests on (timings: a busy machine shows).
import { createCoupon, couponClient } from '../test/support/coupons.ts';
import { startOwnRedis } from '../test/support/redis-server.ts';
import { uniqueEnv, until } from '../test/support/stack.ts';
import { CouponCallError } from '../src/client/grpc.ts';
import { scrape, sumOf } from '../src/metrics/text-format.ts';
import { startService } from '../test/support/processes.ts';
import { tokenFor } from '../test/support/auth.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuWindow, stackGroups } from './cpu.ts';
import { runLoad, type Protocol } from './load.ts';

/** coupon-api's CPU per refusal over one protocol, from /proc over the load run. */
export interface RefusalCpu { protocol: Protocol; calls: number; soldOut: number; apiCpuUs: number; callsPerSec: number }

export interface SoldOutRow {
  view: boolean; refusals: number; redisCommands: number; commandsPerRefusal: number; localShare: number; seconds: number;
  /** Commands in an idle window as long as the refusals took (recovery loops, probes): run whatever the calls do. */
  backgroundCommands: number;
  /** (redisCommands - backgroundCommands) / refusals: what the refusals themselves cost Redis. */
  netPerRefusal: number;
  cpu: RefusalCpu[];
}

/** Refusals of `couponId` from a load generator, with coupon-api's CPU over the run. */
async function refusalCpu(protocol: Protocol, o: { url: string; metricsUrl: string; apiPid: number; issuerPid: number; redisPort: number; couponId: string; token: string; calls: number; connections: number; tag: string }): Promise<RefusalCpu> {
  const dir = mkdtempSync(join(tmpdir(), 'coupon-bench-sold-out-'));
  try {
    const soldOut = async () => sumOf(await scrape(o.metricsUrl, 10_000), 'coupon_gate_decisions_total', { outcome: 'sold_out' });
    const soldOut0 = await soldOut();
    const cpu = cpuWindow(stackGroups({ apiPid: o.apiPid, issuerPid: o.issuerPid, redisPort: o.redisPort }));
    const run = await runLoad({
      url: o.url, protocol, grpcClient: 'h2load', kind: 'issue', couponId: o.couponId, token: o.token,
      userPrefix: `cpu-${o.tag}-`, users: o.calls, requests: o.calls, connections: o.connections, durationCapS: 120, dir,
    });
    const report = cpu.end({ 'load generator': 0 });
    const apiSeconds = Object.entries(report.groups).filter(([name]) => name === 'api' || name.startsWith('api ')).reduce((sum, [, g]) => sum + g.seconds, 0);
    // Counted by the server: h2load does not read gRPC trailers.
    const refused = (await soldOut()) - soldOut0;
    const seconds = (run.lastEndMs - run.firstStartMs) / 1_000;
    return { protocol, calls: run.calls.length, soldOut: refused, apiCpuUs: (apiSeconds / run.calls.length) * 1e6, callsPerSec: run.calls.length / seconds };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every command Redis has run (INFO commandstats), minus the INFO calls themselves. */
async function commandsRun(info: () => Promise<string>): Promise<number> {
  const text = await info();
  let total = 0;
  for (const m of text.matchAll(/^cmdstat_([a-z|_-]+):calls=(\d+)/gm)) if (m[1] !== 'info') total += Number(m[2]);
  return total;
}

async function oneSetting(view: boolean, o: SoldOutOptions): Promise<SoldOutRow> {
  const redis = await startOwnRedis(['--maxmemory-policy', 'noeviction']);
  const r = redis.client();
  const env = { ...uniqueEnv(`bench-sold-out-${view ? 'view' : 'redis'}`), REDIS_URL: redis.url, API_WORKERS: String(o.workers), GATE_LOCAL_SOLD_OUT: String(view) };
  const [api, issuer] = await Promise.all([startService('api', env, undefined, 120_000), startService('issuer', env, undefined, 120_000)]);
  // Several connections, so that every worker (SO_REUSEPORT spreads connections) takes calls.
  const clients = Array.from({ length: 4 * o.workers }, () => couponClient(api.address, true, ['storefront', 'operator']));
  const client = clients[0]!;
  try {
    const coupon = await createCoupon(client, o.quantity);
    // Sell out: every unit won, every publish acknowledged (the pending journal is empty).
    for (let i = 0; i < o.quantity; i += o.concurrency) {
      await Promise.all(Array.from({ length: Math.min(o.concurrency, o.quantity - i) }, (_, j) => client.issueCoupon({ couponId: coupon.id, userId: `winner-${i + j}` })));
    }
    // Every unit issued, so the issuer's own Redis work is over before counting.
    await until('every unit issued', async () => (await client.getCoupon({ couponId: coupon.id })).coupon!.issuedCount === BigInt(o.quantity), 120_000, 250);
    // Warm each worker's view (or, without it, nothing): a few refusals on every connection, not counted.
    for (let i = 0; i < 20; i++) await Promise.all(clients.map((c, j) => c.issueCoupon({ couponId: coupon.id, userId: `warm-${i}-${j}` }).catch(() => undefined)));
    await new Promise((res) => setTimeout(res, 500));
    const local0 = sumOf(await scrape(api.metricsUrl, 10_000), 'coupon_gate_local_answers_total');
    const commands0 = await commandsRun(() => r.info('commandstats'));
    const t0 = performance.now();
    let refused = 0;
    for (let i = 0; i < o.refusals; i += o.concurrency) {
      const answers = await Promise.all(Array.from({ length: Math.min(o.concurrency, o.refusals - i) }, (_, j) =>
        clients[(i + j) % clients.length]!.issueCoupon({ couponId: coupon.id, userId: `late-${i + j}` }).then(() => 'OK', (err: unknown) => (err instanceof CouponCallError ? err.reason : 'ERROR'))));
      refused += answers.filter((a) => a === 'COUPON_SOLD_OUT').length;
    }
    const seconds = (performance.now() - t0) / 1_000;
    const commands = (await commandsRun(() => r.info('commandstats'))) - commands0;
    const local = sumOf(await scrape(api.metricsUrl, 10_000), 'coupon_gate_local_answers_total') - local0;
    if (refused !== o.refusals) throw new Error(`expected ${o.refusals} COUPON_SOLD_OUT answers, got ${refused}`);
    // The background over an idle window of the same length: the services' own loops run whether
    // or not anyone calls, so what the refusals cost is the difference.
    const idle0 = await commandsRun(() => r.info('commandstats'));
    await new Promise((res) => setTimeout(res, seconds * 1_000));
    const background = (await commandsRun(() => r.info('commandstats'))) - idle0;
    const token = await tokenFor('storefront');
    const cpu: RefusalCpu[] = [];
    for (const protocol of ['connect-h1', 'grpc-h2c'] as const) {
      const target = { url: api.url, metricsUrl: api.metricsUrl, apiPid: api.child.pid!, issuerPid: issuer.child.pid!, redisPort: Number(new URL(redis.url).port), couponId: coupon.id, token, connections: o.loadConnections };
      // A first run of the same kind, not counted: this path's code compiled and its connections made.
      await refusalCpu(protocol, { ...target, calls: Math.min(o.refusals, 5_000), tag: `${view ? 'view' : 'redis'}-warm` });
      cpu.push(await refusalCpu(protocol, { ...target, calls: o.refusals, tag: view ? 'view' : 'redis' }));
    }
    return {
      view, refusals: refused, redisCommands: commands, commandsPerRefusal: commands / refused, localShare: local / refused, seconds,
      backgroundCommands: background, netPerRefusal: Math.max(0, commands - background) / refused, cpu,
    };
  } finally {
    for (const c of clients) c.close();
    await Promise.all([api.stop(), issuer.stop()]);
    r.disconnect();
    await redis.stop();
  }
}

export interface SoldOutOptions { quantity: number; refusals: number; workers: number; concurrency: number; loadConnections: number }

export async function soldOutBench(o: SoldOutOptions): Promise<SoldOutRow[]> {
  const rows = [await oneSetting(true, o), await oneSetting(false, o)];
  console.log(`\nSold out: ${o.refusals} refusals after ${o.quantity} units sold and issued, coupon-api with ${o.workers} workers and JWT auth, @grpc/grpc-js over ${4 * o.workers} connections with ${o.concurrency} calls in flight`);
  console.log('(Redis commands include those a script runs and the background; "idle" counts the background alone over an idle window as long as the refusals took, "net" is (commands - idle) per refusal)');
  console.log('sold-out view   refusals   Redis commands   per refusal   idle   net per refusal   answered in process   seconds');
  for (const row of rows) {
    console.log(`${(row.view ? 'on' : 'off').padEnd(15)} ${String(row.refusals).padStart(8)}   ${String(row.redisCommands).padStart(14)}   ${row.commandsPerRefusal.toFixed(4).padStart(11)}   ${String(row.backgroundCommands).padStart(4)}   ${row.netPerRefusal.toFixed(4).padStart(15)}   ${(row.localShare * 100).toFixed(1).padStart(18)}%   ${row.seconds.toFixed(1).padStart(7)}`);
  }
  console.log(`\nCPU per refusal: coupon-api's user + sys (/proc) over a load run of ${o.refusals} calls on the sold-out coupon, after an uncounted run of up to 5,000, ${o.loadConnections} connections (wrk: a distinct late user per call; h2load: a few users repeating)`);
  console.log('sold-out view   protocol     calls   COUPON_SOLD_OUT   calls/s   coupon-api µs CPU/call');
  for (const row of rows) {
    for (const c of row.cpu) console.log(`${(row.view ? 'on' : 'off').padEnd(15)} ${c.protocol.padEnd(10)} ${String(c.calls).padStart(7)}   ${String(c.soldOut).padStart(15)}   ${c.callsPerSec.toFixed(0).padStart(7)}   ${c.apiCpuUs.toFixed(0).padStart(22)}`);
  }
  return rows;
}
