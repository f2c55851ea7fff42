// A redemption change the broker appends after a load's fence (docs/decisions/0010-rebuild-only-from-settled-facts.md):
// it stalled past its publish deadline, so its caller heard UNAVAILABLE and never OK. It carries the
// version the lost Redis gave it, and the first change the reloaded state makes carries the same
// one. If the ledger took the late change first, it would ignore the change its caller was told OK
// for, and the next load would bind the coupon to the other order: two orders told OK for one coupon
// (I5). The ledger drops it by the fence's bound, and the reloaded state refuses a change whose
// time is before that bound, so the bound never drops a change answered OK.
// Real coupon-api and coupon-issuer on a redis-server of this file's own, the late change produced
// with the project's registry framing, the ledger and the dead-letter topic read back.
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponRedemptionChangedSchema, RedemptionTransition } from '../../gen/coupon/events/v1/redemption_pb.js';
import { EventRegistry } from '../../src/events/registry.ts';
import { redeem as redeemScript } from '../../src/redemption/redemption-scripts.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { afterRebuild, callError, couponClient, createCoupon, decided } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { config, db as newDb, kafka, readTopic, until, waitForCaughtUp } from '../support/stack.ts';

const svc = fileServices('late-redeem', { API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000' }, { ownRedis: true });
const { env, topics } = svc;
const db = newDb();
afterAll(async () => { await db.destroy(); });

const row = (couponId: string) => db('user_coupons').where({ coupon_id: couponId, user_id: 'u' })
  .first<{ order_id: string | null; redemption_version: number }>('order_id', 'redemption_version');

describe('a redemption change appended after a load\'s fence', () => {
  it('is dropped by the ledger: the order told OK keeps the coupon across the next load', { timeout: 180_000 }, async () => {
    const payment = couponClient(svc.api.address, false, ['payment']);
    try {
      const coupon = await createCoupon(svc.client, 2, { validForMs: 3_600_000 });
      expect((await decided(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'u' }))).seq).toBe(1n);
      await until('u ISSUED', async () => (await svc.client.getUserCoupon({ couponId: coupon.id, userId: 'u' })).userCoupon!.state === UserCouponState.ISSUED || undefined, 30_000);
      // Order A's redeem is made on the Redis about to be lost; its change reaches the partition
      // only after the load's fence, so its caller never heard OK.
      const lateAt = Date.now();
      await svc.redis.restart();

      // The first loss: 'v' wins seq 2 on the rebuilt gate (which holds u's issued state again),
      // and a read of u loads the redemption state behind a fence.
      expect((await afterRebuild(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'v' }))).seq).toBe(2n);
      expect((await afterRebuild(() => svc.client.getUserCoupon({ couponId: coupon.id, userId: 'u' }))).userCoupon!.state).toBe(UserCouponState.ISSUED);
      const r = svc.redis.client();
      expect(await r.exists(couponKeys(coupon.id).redeemLoaded)).toBe(1);
      // The reloaded state refuses a change whose time is before the fence's bound.
      expect((await redeemScript(new CouponScripts(r), coupon.id, 'u', 'order-old-clock', lateAt)).status).toBe('CLOCK_BEHIND');
      expect(await r.hget(couponKeys(coupon.id).redeem, 'u')).toBeNull();
      await waitForCaughtUp(kafka(), env.KAFKA_REDEMPTION_GROUP, topics.redemption);
      const fences = await readTopic(kafka(), topics.redemption, (key) => key === coupon.id, true);
      expect(fences.filter((m) => m.headers['coupon-fence'] !== undefined).length).toBeGreaterThan(0);

      // The late change of order A lands after the fence, with version 1.
      const codec = await new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY }).forTopic(topics.redemption, CouponRedemptionChangedSchema);
      const producer = kafka().producer();
      await producer.connect();
      await producer.send({ topic: topics.redemption, acks: -1, messages: [{ key: coupon.id, value: codec.encode(create(CouponRedemptionChangedSchema, {
        couponId: coupon.id, userId: 'u', orderId: 'order-A', transition: RedemptionTransition.REDEEMED, occurredAt: timestampFromMs(lateAt), version: 1n,
      })) }] });
      await producer.disconnect();

      // Order B redeems on the reloaded state, also version 1, and is told OK.
      const redeemed = await decided(() => payment.redeemCoupon({ couponId: coupon.id, userId: 'u', orderId: 'order-B' }));
      expect({ state: redeemed.userCoupon!.state, order: redeemed.userCoupon!.orderId }).toEqual({ state: UserCouponState.REDEEMED, order: 'order-B' });
      await waitForCaughtUp(kafka(), env.KAFKA_REDEMPTION_GROUP, topics.redemption);
      expect(await row(coupon.id)).toEqual({ order_id: 'order-B', redemption_version: 1 });
      expect((await db('redemption_fences').where({ coupon_id: coupon.id }).first<{ stale_before: Date }>()).stale_before.getTime()).toBeGreaterThan(lateAt);

      // The second loss: the state is loaded again from the ledger. Order B still holds the coupon;
      // order A, never told OK, cannot take it.
      await svc.redis.restart();
      const repeat = await afterRebuild(() => payment.redeemCoupon({ couponId: coupon.id, userId: 'u', orderId: 'order-B' }));
      expect({ state: repeat.userCoupon!.state, order: repeat.userCoupon!.orderId }).toEqual({ state: UserCouponState.REDEEMED, order: 'order-B' });
      const other = await callError(payment.redeemCoupon({ couponId: coupon.id, userId: 'u', orderId: 'order-A' }));
      expect({ code: other.code, reason: other.reason }).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_ALREADY_REDEEMED' });
      await waitForCaughtUp(kafka(), env.KAFKA_REDEMPTION_GROUP, topics.redemption);
      expect(await row(coupon.id)).toEqual({ order_id: 'order-B', redemption_version: 1 });
      expect(await readTopic(kafka(), topics.redemptionDlt, (key) => key === coupon.id)).toHaveLength(0);
    } finally {
      payment.close();
    }
  });
});
