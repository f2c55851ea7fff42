// The rebuild bench: a coupon's gate rebuilt from the ledger after a Redis loss, on a redis-server
// of its own: time, peak RSS of this process, and the longest Redis call. Measured in this process,
// so it runs first: peak RSS is the process's high-water mark.
import { randomUUID } from 'node:crypto';
import { GateRebuilder } from '../src/gate/rebuild.ts';
import { ledgerIsFinal } from '../src/store/loss-guard.ts';
import type { Db } from '../src/store/db.ts';
import { couponKeys } from '../src/store/keys.ts';
import { CouponScripts } from '../src/store/scripts.ts';
import { startPrivateRedis } from '../test/support/private-redis.ts';
import { createLogger } from '../src/log.ts';
import { progress } from './progress.ts';

export interface RebuildReport {
  users: number;
  freeSeqs: number;
  insertSeconds: number;
  seconds: number;
  rowsPerSec: number;
  answer: unknown;
  winners: number;
  free: number;
  peakRssBytes: number;
  baseRssBytes: number;
  peakHeapBytes: number;
  redisMemory: string | null;
  scriptCalls: number | null;
  scriptMicrosPerCall: number | null;
  secondsInRedis: number;
  longestCall: { micros: number; command: string };
  slowest: string[];
  lines: string[];
}

export async function rebuildBench(db: Db, users: number): Promise<RebuildReport> {
  const baseRss = process.memoryUsage().rss;
  const redis = await startPrivateRedis();
  const couponId = randomUUID();
  // The ledger after a sale: `users` winners, and one seq in every 101 released before the loss
  // (a gap the rebuild puts back in the free list).
  const gaps = Math.floor((users - 1) / 100);
  const total = users + gaps;
  const day = 86_400_000;
  try {
    progress.say(`[bench] rebuild: inserting ${users} ledger rows …`);
    let t0 = performance.now();
    await db('coupons').insert({ id: couponId, name: 'rebuild bench', total_quantity: total, issued_count: users, opens_at: new Date(Date.now() - day), closes_at: new Date(Date.now() + day), valid_until: new Date(Date.now() + 30 * day) });
    await db.raw(`INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at, issued_at)
      SELECT ?, 'bench-user-' || i, i + (i - 1) / 100, now(), now() FROM generate_series(1, ?::int) AS i`, [couponId, users]);
    const insertSeconds = (performance.now() - t0) / 1000;

    // Every call slower than 0.5 ms is logged; commandstats counts them all.
    await redis.client.config('SET', 'slowlog-log-slower-than', '500');
    await redis.client.config('SET', 'slowlog-max-len', '100000');
    await redis.client.config('RESETSTAT');
    const rebuilder = new GateRebuilder({ db, redis: redis.client, scripts: new CouponScripts(redis.client, { retentionMs: 7 * day }), log: createLogger('bench', 'error'), guard: ledgerIsFinal });
    // V8 heap in use, sampled (it counts garbage not yet collected, as RSS does).
    let peakHeap = process.memoryUsage().heapUsed;
    const sampler = setInterval(() => { peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed); }, 20);
    progress.say('[bench] rebuild: rebuilding the gate from the ledger …');
    t0 = performance.now();
    const answer = await rebuilder.arm(couponId, 'after-the-loss');
    const seconds = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    const peakRss = process.resourceUsage().maxRSS * 1024;

    const slow = (await redis.client.call('SLOWLOG', 'GET', '-1')) as [number, number, number, string[]][];
    // For a script, name its operation (gate-load.lua's ARGV[1]), which follows its keys.
    const described = (args: string[]) => (/^eval/i.test(String(args[0])) ? `${String(args[0])} '${String(args[3 + Number(args[2])])}'` : String(args[0]));
    const longest = slow.reduce<{ micros: number; command: string }>((max, [, , micros, args]) => (micros > max.micros ? { micros, command: described(args) } : max), { micros: 0, command: '-' });
    const slowest = [...slow].sort((a, b) => b[2] - a[2]).slice(0, 5).map(([, , micros, args]) => `${(micros / 1000).toFixed(1)} ms ${described(args)}`);
    const stats = await redis.client.info('commandstats');
    const evalsha = /^cmdstat_evalsha:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/m.exec(stats);
    const memory = /^used_memory_human:(\S+)/m.exec(await redis.client.info('memory'))?.[1] ?? null;
    const k = couponKeys(couponId);
    const [winners, free] = await Promise.all([redis.client.hlen(k.winners), redis.client.llen(k.free)]);
    const mb = (bytes: number) => `${Math.round(bytes / 1_048_576)} MB`;
    const secondsInRedis = Number(evalsha?.[2] ?? 0) / 1e6;
    const lines = [
      `rebuild: ${users} ledger rows inserted in ${insertSeconds.toFixed(1)} s (one INSERT … SELECT generate_series)`,
      `rebuild: ${users} users (${gaps} free seqs) rebuilt in ${seconds.toFixed(1)} s = ${Math.round(users / seconds)} rows/s; answer ${JSON.stringify(answer)}; winners ${winners}, free ${free}`,
      `  peak RSS of this process ${mb(peakRss)} (${mb(baseRss)} before), peak V8 heap ${mb(peakHeap)} (garbage included); Redis holds ${memory ?? '?'}`,
      `  ${evalsha?.[1] ?? '?'} script calls, ${evalsha?.[3] ?? '?'} µs each on average, ${secondsInRedis.toFixed(2)} s in Redis altogether; longest single Redis call ${(longest.micros / 1000).toFixed(1)} ms (${longest.command})`,
      `  slowest calls: ${slowest.join('; ')}`,
    ];
    return {
      users, freeSeqs: gaps, insertSeconds, seconds, rowsPerSec: users / seconds, answer, winners, free,
      peakRssBytes: peakRss, baseRssBytes: baseRss, peakHeapBytes: peakHeap, redisMemory: memory,
      scriptCalls: evalsha ? Number(evalsha[1]) : null, scriptMicrosPerCall: evalsha ? Number(evalsha[3]) : null,
      secondsInRedis, longestCall: longest, slowest, lines,
    };
  } finally {
    await redis.stop();
    await db('user_coupons').where({ coupon_id: couponId }).delete();
    await db('coupons').where({ id: couponId }).delete();
  }
}
