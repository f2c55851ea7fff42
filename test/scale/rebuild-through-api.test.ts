// A gate rebuild through coupon-api after Redis lost everything, on a Redis of the test's own so
// its work can be measured (docs/design.md#growth): a coupon with 40,000 winners and
// 40,000 released seqs is rebuilt with Redis work in proportion to the ledger, in calls of one
// bounded chunk each, and answers exactly as before the loss. Only public behaviour and Redis's
// own figures are used, so the same file runs against any version of the service.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { startService } from '../support/processes.ts';
import { afterRebuild, couponClient, createCoupon } from '../support/coupons.ts';
import { serverCpuSeconds, slowlog, startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { db as newDb, uniqueEnv } from '../support/stack.ts';

const db = newDb();
let redis: PrivateRedis;
const created: string[] = [];

beforeAll(async () => { redis = await startPrivateRedis(); });
afterAll(async () => {
  for (const id of created) {
    await db('user_coupons').where({ coupon_id: id }).delete();
    await db('coupons').where({ id }).delete();
  }
  await db.destroy();
  await redis?.stop();
});

describe('a rebuild through coupon-api after Redis lost everything', () => {
  it('never blocks Redis with one long call, even with tens of thousands of free seqs, and answers as before the loss', { timeout: 300_000 }, async () => {
    const env = { ...uniqueEnv('rebuild-scale'), REDIS_URL: redis.url };
    // The issuer too: a rebuild waits for it to pass the fence it appends to the coupon's partition.
    const [api, issuer] = await Promise.all([startService('api', env), startService('issuer', env)]);
    const client = couponClient(api.address);
    try {
      const coupon = await createCoupon(client, 100_000);
      created.push(coupon.id);
      // 40,000 winners at the even seqs: every odd seq below 80,000 was released before the loss.
      await db.raw(`INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at) SELECT ?, 'u' || s, s, now() FROM generate_series(2, 80000, 2) AS s`, [coupon.id]);
      await db('coupons').where({ id: coupon.id }).update({ issued_count: 40_000 });
      await redis.client.flushall();
      await redis.client.config('SET', 'slowlog-max-len', '1000000');
      await redis.client.config('SET', 'slowlog-log-slower-than', '0');
      await redis.client.slowlog('RESET');
      const cpuBefore = await serverCpuSeconds(redis.client);

      const first = await afterRebuild(() => client.issueCoupon({ couponId: coupon.id, userId: 'newcomer' }, { timeoutMs: 240_000 }), 240_000);
      expect(first.seq).toBe(1n);
      const cpu = await serverCpuSeconds(redis.client) - cpuBefore;
      const winner = await client.issueCoupon({ couponId: coupon.id, userId: 'u4' }, { timeoutMs: 30_000 });
      expect({ seq: winner.seq, state: winner.state }).toEqual({ seq: 4n, state: UserCouponState.ISSUED });
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'next' }, { timeoutMs: 30_000 })).seq).toBe(3n);

      const calls = await slowlog(redis.client);
      await redis.client.config('SET', 'slowlog-log-slower-than', '10000');
      const scripts = calls.filter((c) => c.command.startsWith('eval'));
      // Work done in Redis grows with the ledger, not with its square (a check per free seq over the
      // whole free list, as LPOS did, costs seconds of Redis CPU here). CPU time, not wall time:
      // other work on this machine stretches every call's wall time alike.
      const longest = calls.reduce((max, c) => Math.max(max, c.micros), 0);
      console.log(`rebuild of 40,000 rows and 40,000 free seqs: ${scripts.length} script calls, Redis CPU ${cpu.toFixed(2)} s, longest call ${longest} µs (wall)`);
      expect(cpu).toBeLessThan(2);
      expect(scripts.length).toBeGreaterThan(40);
      // Each call carries one chunk at most: 1,000 rows (3 arguments each) or 1,000 seqs.
      expect(scripts.reduce((max, c) => Math.max(max, c.args), 0)).toBeLessThanOrEqual(3_100);
    } finally {
      client.close();
      await Promise.all([api.stop(), issuer.stop()]);
    }
  });
});
