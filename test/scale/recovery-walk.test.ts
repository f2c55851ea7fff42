// The recovery loops as the system grows (docs/design.md#growth): coupon-api looks for
// reservations and redemption changes whose publish never finished, every RECOVERY_INTERVAL_MS,
// but an idle coupon costs it nothing, however many coupons were ever created, while a crash
// between reserve and publish is still recovered. On a Redis of the test's own, so Redis's own
// command counts show the work; only public behaviour is used, so this runs against any version.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';
import { startService } from '../support/processes.ts';
import { couponClient, createCoupon } from '../support/coupons.ts';
import { startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { db as newDb, uniqueEnv, until } from '../support/stack.ts';

const db = newDb();
let redis: PrivateRedis;
beforeAll(async () => { redis = await startPrivateRedis(); });
afterAll(async () => { await db.destroy(); await redis?.stop(); });

const fastRecovery = { RECOVERY_INTERVAL_MS: '100', RECOVERY_STALE_MS: '1000', PUBLISH_TIMEOUT_MS: '500' };

/** Calls Redis has served, per command, from INFO commandstats (commands run by scripts included). */
async function commandCalls(): Promise<Record<string, number>> {
  const info = await redis.client.info('commandstats');
  return Object.fromEntries([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
}

describe('coupon-api on an idle system', () => {
  it('does no per-coupon work in its recovery loops for coupons with nothing to recover, however many exist', { timeout: 120_000 }, async () => {
    const api = await startService('api', { ...uniqueEnv('idle-walk'), REDIS_URL: redis.url, ...fastRecovery });
    const client = couponClient(api.address);
    try {
      const coupons = 150;
      for (let i = 0; i < coupons; i += 25) await Promise.all(Array.from({ length: 25 }, () => createCoupon(client, 10)));
      await new Promise((r) => setTimeout(r, 1_000));
      const before = await commandCalls();
      // About 30 passes of both loops.
      await new Promise((r) => setTimeout(r, 3_000));
      const after = await commandCalls();
      // What a walk over coupons asks per coupon: pending reservations, outbox entries, their counts.
      const perCoupon = ['zrangebyscore', 'zrangebylex', 'zcard'].reduce((n, c) => n + (after[c] ?? 0) - (before[c] ?? 0), 0);
      expect(perCoupon).toBeLessThan(coupons);
    } finally {
      client.close();
      await api.stop();
    }
  });
});

describe('a crash between reserve and publish', () => {
  it('is still recovered: the next coupon-api republishes the reservation and the user is issued their seq', { timeout: 120_000 }, async () => {
    const env = { ...uniqueEnv('walk-crash'), REDIS_URL: redis.url };
    const issuer = await startService('issuer', env);
    // One process (no cluster): the failpoint kills process.pid, and this test waits for coupon-api itself to die.
    const crashing = await startService('api', { ...env, FAILPOINT: 'crash-after-reserve', API_WORKERS: '1' });
    const c1 = couponClient(crashing.address);
    const coupon = await createCoupon(c1, 5);
    expect(await c1.issueCoupon({ couponId: coupon.id, userId: 'victim' }).catch((e: unknown) => e)).toBeInstanceOf(CouponCallError);
    c1.close();
    await until('the api to die', () => Promise.resolve(crashing.child.signalCode !== null || crashing.child.exitCode !== null));

    const api = await startService('api', { ...env, ...fastRecovery });
    const client = couponClient(api.address);
    try {
      await until('the ledger row', async () => (await db('user_coupons').where({ coupon_id: coupon.id }).select('user_id', 'seq')).length === 1, 60_000);
      expect(await db('user_coupons').where({ coupon_id: coupon.id }).select('user_id', 'seq')).toEqual([{ user_id: 'victim', seq: 1 }]);
      await until('ISSUED', async () => (await client.getUserCoupon({ couponId: coupon.id, userId: 'victim' })).userCoupon!.state === UserCouponState.ISSUED);
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'victim' })).seq).toBe(1n);
    } finally {
      client.close();
      await Promise.all([api.stop(), issuer.stop()]);
    }
  });
});
