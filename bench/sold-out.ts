// `npm run bench -- sold-out`: what a sold-out sale's refusals cost Redis, with the in-process
// sold-out view (docs/decisions/0006-sold-out-view-in-process.md) and without it, in one run.
// coupon-api runs as `npm start` runs it (API_WORKERS workers, JWT auth) on a redis-server of the
// bench's own, so INFO commandstats counts only this sale. Per setting it prints the Redis commands
// per refused IssueCoupon and the share of refusals answered in process. Counts, not timings: the
// figures hold on a busy machine too.
import { createCoupon, couponClient } from '../test/support/coupons.ts';
import { startOwnRedis } from '../test/support/redis-server.ts';
import { uniqueEnv, until } from '../test/support/stack.ts';
import { CouponCallError } from '../src/client/grpc.ts';
import { scrape, sumOf } from '../src/metrics/text-format.ts';
import { startService } from '../test/support/processes.ts';

export interface SoldOutRow {
  view: boolean; refusals: number; redisCommands: number; commandsPerRefusal: number; localShare: number; seconds: number;
  /** Commands in an idle window as long as the refusals took (recovery loops, probes): run whatever the calls do. */
  backgroundCommands: number;
  /** (redisCommands - backgroundCommands) / refusals: what the refusals themselves cost Redis. */
  netPerRefusal: number;
}

/** Every command Redis has run (INFO commandstats), minus the INFO calls themselves. */
async function commandsRun(info: () => Promise<string>): Promise<number> {
  const text = await info();
  let total = 0;
  for (const m of text.matchAll(/^cmdstat_([a-z|_-]+):calls=(\d+)/gm)) if (m[1] !== 'info') total += Number(m[2]);
  return total;
}

async function oneSetting(view: boolean, o: { quantity: number; refusals: number; workers: number; concurrency: number }): Promise<SoldOutRow> {
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
    return {
      view, refusals: refused, redisCommands: commands, commandsPerRefusal: commands / refused, localShare: local / refused, seconds,
      backgroundCommands: background, netPerRefusal: Math.max(0, commands - background) / refused,
    };
  } finally {
    for (const c of clients) c.close();
    await Promise.all([api.stop(), issuer.stop()]);
    r.disconnect();
    await redis.stop();
  }
}

export async function soldOutBench(o: { quantity: number; refusals: number; workers: number; concurrency: number }): Promise<SoldOutRow[]> {
  const rows = [await oneSetting(true, o), await oneSetting(false, o)];
  console.log(`\nSold out: ${o.refusals} refusals after ${o.quantity} units sold and issued, coupon-api with ${o.workers} workers and JWT auth, @grpc/grpc-js over ${4 * o.workers} connections with ${o.concurrency} calls in flight`);
  console.log('(Redis commands include those a script runs and the background; "idle" counts the background alone over an idle window as long as the refusals took, "net" is (commands - idle) per refusal)');
  console.log('sold-out view   refusals   Redis commands   per refusal   idle   net per refusal   answered in process   seconds');
  for (const row of rows) {
    console.log(`${(row.view ? 'on' : 'off').padEnd(15)} ${String(row.refusals).padStart(8)}   ${String(row.redisCommands).padStart(14)}   ${row.commandsPerRefusal.toFixed(4).padStart(11)}   ${String(row.backgroundCommands).padStart(4)}   ${row.netPerRefusal.toFixed(4).padStart(15)}   ${(row.localShare * 100).toFixed(1).padStart(18)}%   ${row.seconds.toFixed(1).padStart(7)}`);
  }
  return rows;
}
