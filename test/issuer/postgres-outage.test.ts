// An outage is not a poison record. PostgreSQL is cut for 60 s in the middle of a
// sale and of redemptions: the issuer and the redemption ledger keep retrying without committing,
// alert once each, dead-letter nothing, and every winner and redemption reaches the ledger once
// PostgreSQL is back.
import { describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { topicNames } from '../../src/events/topics.ts';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { startService } from '../support/processes.ts';
import { couponClient, createCoupon } from '../support/coupons.ts';
import { cuttableProxy } from '../support/proxy.ts';
import { db as newDb, kafka, readTopic, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';
import { alertWebhook } from '../support/alert-webhook.ts';

const OUTAGE_MS = 60_000;

describe('PostgreSQL cut for 60 s mid-sale', () => {
  it('dead-letters nothing, alerts once per consumer, and issues every winner and applies every redemption once it is back', { timeout: 240_000 }, async () => {
    const hook = await alertWebhook();
    const { alerts } = hook;
    const proxy = await cuttableProxy(5432);
    const env = { ...uniqueEnv('pg-outage'), ISSUE_BACKOFF_MS: '100', ISSUE_BACKOFF_MAX_MS: '2000' };
    const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
    const db = newDb();
    const api = await startService('api', env);
    const issuer = await startService('issuer', {
      ...env,
      DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/test`,
      ALERT_WEBHOOK_URL: hook.url,
    });
    const client = couponClient(api.address);
    const rows = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number; order_id: string | null }[]>('user_id', 'seq', 'order_id');
    try {
      const coupon = await createCoupon(client, 20);
      const early = Array.from({ length: 5 }, (_, i) => `early-${i}`);
      for (const userId of early) await client.issueCoupon({ couponId: coupon.id, userId });
      await until('5 rows', async () => (await rows(coupon.id)).length === 5);
      for (const userId of early) await until(`${userId} issued`, async () => (await client.getUserCoupon({ couponId: coupon.id, userId })).userCoupon!.state === UserCouponState.ISSUED);

      await proxy.cut();
      const cutAt = Date.now();
      // The gate and redemption need no PostgreSQL: winners and redemptions are answered OK.
      const winners = await Promise.all(Array.from({ length: 10 }, (_, i) => client.issueCoupon({ couponId: coupon.id, userId: `during-${i}` }).then((res) => ({ userId: `during-${i}`, seq: Number(res.seq) }))));
      const redeemed = await Promise.all(early.slice(0, 3).map((userId, i) => client.redeemCoupon({ couponId: coupon.id, userId, orderId: `order-${i}` })));
      for (const res of redeemed) expect(res.userCoupon!.state).toBe(UserCouponState.REDEEMED);

      await issuer.waitForLog('coupon.dependency.outage', 30_000);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, cutAt + OUTAGE_MS - Date.now())));
      // Still nothing written, nothing dead-lettered: the consumers wait for the database.
      expect(await rows(coupon.id)).toHaveLength(5);
      await proxy.restore();

      await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue, 90_000);
      await waitForCaughtUp(kafka(), redemptionGroups(env.KAFKA_REDEMPTION_GROUP).ledger, topics.redemption, 90_000);
      const ledger = await rows(coupon.id);
      expect(ledger).toHaveLength(15);
      expect(ledger.map((r) => r.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
      for (const w of winners) expect(ledger.find((r) => r.user_id === w.userId)?.seq).toBe(w.seq);
      expect(Object.fromEntries(ledger.filter((r) => r.order_id).map((r) => [r.user_id, r.order_id]))).toEqual({ 'early-0': 'order-0', 'early-1': 'order-1', 'early-2': 'order-2' });
      for (const w of winners) expect((await client.getUserCoupon({ couponId: coupon.id, userId: w.userId })).userCoupon!.state).toBe(UserCouponState.ISSUED);

      for (const dlt of [topics.issueDlt, topics.redemptionDlt, topics.paymentResultDlt]) expect(await readTopic(kafka(), dlt)).toHaveLength(0);
      expect(await db('dead_letters').whereIn('topic', [topics.issue, topics.redemption])).toHaveLength(0);
      // One alert per consumer stuck on the outage, and a recovery notice for each.
      const outageAlerts = issuer.logs.filter((l) => l.msg === 'coupon.dependency.outage');
      expect(outageAlerts.map((a) => a.topic).sort()).toEqual([topics.redemption, topics.issue].sort());
      await until('recovery notices', () => Promise.resolve(issuer.logs.filter((l) => l.msg === 'coupon.dependency.recovered').length === 2 || undefined));
      expect(alerts.filter((a) => a.event === 'coupon.dependency.outage')).toHaveLength(2);
      expect(issuer.logs.filter((l) => typeof l.msg === 'string' && l.msg.endsWith('dead_lettered'))).toHaveLength(0);
      expect(issuer.child.exitCode).toBeNull();
    } finally {
      client.close();
      await Promise.all([api.stop(), issuer.stop()]);
      await proxy.close();
      hook.close();
      await db.destroy();
    }
  });
});
