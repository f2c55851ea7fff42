// A rebuild after a Redis loss trusts the ledger only once the consumer has committed past a fence
// record it appended to the coupon's partition, acknowledged by every in-sync replica
// (src/events/fence.ts, docs/decisions/0010-rebuild-only-from-settled-facts.md). The consumers skip
// fences: nothing is dead-lettered, and the coupon sells on from the rebuilt gate.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { FENCE_HEADER } from '../../src/events/fence.ts';
import { topicNames } from '../../src/events/topics.ts';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { afterRebuild, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { db as newDb, dropEnvironment, kafka, readTopic, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';

const env = { ...uniqueEnv('rebuild-fence'), API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000' };
const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
const db = newDb();
let own: OwnRedis;
let api: ServiceProcess;
let issuer: ServiceProcess;
let client: CouponClient;

beforeAll(async () => {
  own = await startOwnRedis();
  [api, issuer] = await Promise.all([startService('api', { ...env, REDIS_URL: own.url }), startService('issuer', { ...env, REDIS_URL: own.url })]);
  client = couponClient(api.address);
}, 120_000);
afterAll(async () => {
  client?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  await own?.stop();
  await dropEnvironment(kafka(), topics);
  await db.destroy();
});

describe('a rebuild after a Redis loss', () => {
  it('appends a fence to the coupon\'s partition of each topic it rebuilds from, waits for the consumer to pass it, and nothing is dead-lettered', { timeout: 180_000 }, async () => {
    const coupon = await createCoupon(client, 5, { validForMs: 3_600_000 });
    expect((await client.issueCoupon({ couponId: coupon.id, userId: 'before' })).seq).toBe(1n);
    await until('ISSUED', async () => (await client.getUserCoupon({ couponId: coupon.id, userId: 'before' })).userCoupon!.state === UserCouponState.ISSUED);
    await client.redeemCoupon({ couponId: coupon.id, userId: 'before', orderId: 'order-1' });
    const k = kafka();
    const issueBefore = await readTopic(k, topics.issue, (key) => key === coupon.id, true);
    const redemptionBefore = await readTopic(k, topics.redemption, (key) => key === coupon.id, true);
    expect(issueBefore.filter((r) => FENCE_HEADER in r.headers)).toEqual([]);

    await own.restart();

    // The gate is rebuilt (IssueCoupon waits for it), then the redemption state (RedeemCoupon's repeat).
    expect((await afterRebuild(() => client.issueCoupon({ couponId: coupon.id, userId: 'after' }))).seq).toBe(2n);
    expect((await afterRebuild(() => client.redeemCoupon({ couponId: coupon.id, userId: 'before', orderId: 'order-1' }))).userCoupon!.orderId).toBe('order-1');

    for (const [topic, before, group] of [[topics.issue, issueBefore, env.KAFKA_ISSUER_GROUP], [topics.redemption, redemptionBefore, redemptionGroups(env.KAFKA_REDEMPTION_GROUP).ledger]] as const) {
      const after = await readTopic(k, topic, (key) => key === coupon.id, true);
      const fences = after.filter((r) => FENCE_HEADER in r.headers);
      // One fence for the one loss, from the one coupon-api process, after every record of before the loss.
      expect(fences, `fences on ${topic}`).toHaveLength(1);
      const lastBefore = Math.max(...before.map((r) => Number(r.offset)));
      expect(Number(fences[0]!.offset)).toBeGreaterThan(lastBefore);
      expect(fences[0]!.partition).toBe(before[0]!.partition);
      expect(fences[0]!.value.length).toBe(0);
      // The consumer skipped it and committed past it.
      await waitForCaughtUp(k, group, topic);
    }
    for (const dlt of [topics.issueDlt, topics.redemptionDlt]) expect(await readTopic(k, dlt)).toEqual([]);
    expect(await db('dead_letters').whereIn('topic', [topics.issue, topics.redemption])).toEqual([]);
    await until('the new winner ISSUED', async () => (await client.getUserCoupon({ couponId: coupon.id, userId: 'after' })).userCoupon!.state === UserCouponState.ISSUED);
    expect(await db('user_coupons').where({ coupon_id: coupon.id }).orderBy('seq').select('user_id', 'seq', 'order_id'))
      .toEqual([{ user_id: 'before', seq: 1, order_id: 'order-1' }, { user_id: 'after', seq: 2, order_id: null }]);
  });
});
