// Reconciliation: after a clean sale Redis, PostgreSQL and Kafka agree; drift made on
// purpose (a ledger row deleted, a Redis winner deleted) is named by `npm run reconcile` (exit 1)
// and by coupon-issuer's periodic pass (coupon_reconcile_drift{kind}).
import { afterAll, describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { topicNames } from '../../src/events/topics.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { run } from '../support/processes.ts';
import { fileServices } from '../support/services.ts';
import { createCoupon } from '../support/coupons.ts';
import { db as newDb, kafka, redis as newRedis, until, waitForCaughtUp } from '../support/stack.ts';

const svc = fileServices('reconcile', { RECONCILE_INTERVAL_MS: '1000' });
const { env } = svc;
const db = newDb();
const r = newRedis();
afterAll(async () => { await db.destroy(); r.disconnect(); });

const reconcile = (couponId: string) => run(process.execPath, ['src/bin/reconcile.ts', couponId], env);
const driftGauge = async (kind: string) => {
  const text = await (await fetch(svc.issuer.metricsUrl)).text();
  const line = text.split('\n').find((l) => l.startsWith(`coupon_reconcile_drift{kind="${kind}"}`));
  return Number(line?.split(' ')[1] ?? 'NaN');
};

describe('npm run reconcile', () => {
  it('exits 0 after a clean sale, and 1 naming the drift after a ledger row or a Redis winner is deleted', { timeout: 120_000 }, async () => {
    const coupon = await createCoupon(svc.client, 10);
    for (let i = 0; i < 10; i++) await svc.client.issueCoupon({ couponId: coupon.id, userId: `u${i}` });
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topicNames(env.KAFKA_TOPIC_PREFIX).issue);
    await until('all issued in Redis', async () => (await svc.client.getUserCoupon({ couponId: coupon.id, userId: 'u9' })).userCoupon!.state === UserCouponState.ISSUED);
    await until('issued marks', async () => (await r.hlen(couponKeys(coupon.id).issued)) === 10);

    const clean = await reconcile(coupon.id);
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
    expect(clean.stdout).toContain(`${coupon.id}  10`);
    expect(clean.stdout).toContain('reconcile: 1 coupons, 0 with drift');
    expect(await driftGauge('ledger_count')).toBe(0);

    // A ledger row disappears.
    const row = await db('user_coupons').where({ coupon_id: coupon.id, user_id: 'u3' }).first<Record<string, unknown>>();
    await db('user_coupons').where({ coupon_id: coupon.id, user_id: 'u3' }).delete();
    const lostRow = await reconcile(coupon.id);
    expect(lostRow.code).toBe(1);
    expect(lostRow.stdout).toContain(`DRIFT ${coupon.id} ledger_count: coupons.issued_count is 10, user_coupons holds 9 rows`);
    expect(lostRow.stdout).toMatch(new RegExp(`DRIFT ${coupon.id} accepted_not_issued`));
    // coupon-issuer's periodic pass sees it too.
    await until('the drift gauge', async () => (await driftGauge('ledger_count')) === 1 || undefined, 30_000);
    await db('user_coupons').insert(row);

    // A Redis winner disappears.
    await r.hdel(couponKeys(coupon.id).winners, 'u5');
    const lostWinner = await reconcile(coupon.id);
    expect(lostWinner.code).toBe(1);
    expect(lostWinner.stdout).toContain(`DRIFT ${coupon.id} issued_not_accepted: 1 ledger rows whose user Redis does not hold as a winner (e.g. u5)`);
  });
});
