// GetUserCoupon after Redis lost a redeemed coupon, while the ledger has not applied the redemption
// RedeemCoupon already answered OK for (OK comes after Kafka's ack, docs/redemption.md): it must
// never tell the payment service ISSUED, no order, for a coupon it was told is REDEEMED by its order.
// Like RedeemCoupon, it answers UNAVAILABLE until the redemption state is reloaded
// (docs/redemption.md#after-a-redis-loss).
//
// Real coupon-api and coupon-issuer (which runs the redemption ledger consumer) on a redis-server
// of this file's own; the issuer is stopped after the coupon is issued, so the redemption event
// waits in Kafka while Redis restarts.
import { describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { createCoupon } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { until } from '../support/stack.ts';

const svc = fileServices('redeemed-after-loss', { API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000' }, { ownRedis: true });

describe('GetUserCoupon after Redis lost a redeemed coupon', () => {
  it('never answers ISSUED for a coupon RedeemCoupon told REDEEMED', async () => {
    const coupon = await createCoupon(svc.client, 2, { validForMs: 3_600_000 });
    await svc.client.issueCoupon({ couponId: coupon.id, userId: 'payer' });
    await until('ISSUED', async () => (await svc.client.getUserCoupon({ couponId: coupon.id, userId: 'payer' })).userCoupon!.state === UserCouponState.ISSUED);
    await svc.issuer.stop();

    const redeemed = await svc.client.redeemCoupon({ couponId: coupon.id, userId: 'payer', orderId: 'order-1' });
    expect(redeemed.userCoupon!.state).toBe(UserCouponState.REDEEMED);
    await svc.redis.restart();

    const answers: unknown[] = [];
    for (let i = 0; i < 5; i++) {
      answers.push(await svc.client.getUserCoupon({ couponId: coupon.id, userId: 'payer' }).then(
        (res) => ({ state: UserCouponState[res.userCoupon!.state], orderId: res.userCoupon!.orderId }),
        (e: unknown) => ({ reason: (e as { reason?: string }).reason }),
      ));
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const got of answers) expect([{ state: 'REDEEMED', orderId: 'order-1' }, { reason: 'BACKEND_UNAVAILABLE' }]).toContainEqual(got);
  });
});
