// GetUserCoupon after Redis lost a coupon's state. A user told OK whose record the issuer has not
// written yet (docs/design.md#i3-no-lost-acceptance: OK comes after Kafka's ack, not after the
// ledger) must never hear NOT_REQUESTED, "never won": like IssueCoupon, the read answers UNAVAILABLE
// until the gate is rebuilt, and then the user's seq (docs/api.md#getusercoupon). A coupon past its
// retention, whose gate is never armed again, is answered from the ledger at once.
//
// Real coupon-api and coupon-issuer on a redis-server of this file's own (it is restarted here);
// the issuer starts only after the loss, so the record is still in Kafka when the question is asked.
import { describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { startService } from '../support/processes.ts';
import { afterRebuild, callError, createCoupon } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { until } from '../support/stack.ts';

const svc = fileServices('get-user-after-loss', { API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000' }, { ownRedis: true, issuer: false });

describe('GetUserCoupon after Redis lost the coupon', () => {
  it('never answers NOT_REQUESTED ("never won") to a user IssueCoupon told OK', async () => {
    const coupon = await createCoupon(svc.client, 3);
    const won = await svc.client.issueCoupon({ couponId: coupon.id, userId: 'winner' });
    expect(won.seq).toBe(1n);

    await svc.redis.restart();

    // IssueCoupon knows it cannot answer yet.
    const issue = await callError(svc.client.issueCoupon({ couponId: coupon.id, userId: 'winner' }));
    expect(issue.reason).toBe('BACKEND_UNAVAILABLE');
    // GetUserCoupon must not deny the win: PENDING with seq 1, or UNAVAILABLE, are both honest.
    const answers: unknown[] = [];
    for (let i = 0; i < 5; i++) {
      answers.push(await svc.client.getUserCoupon({ couponId: coupon.id, userId: 'winner' }).then(
        (res) => ({ state: UserCouponState[res.userCoupon!.state], seq: res.userCoupon!.seq }),
        (e: unknown) => ({ reason: (e as { reason?: string }).reason }),
      ));
      await new Promise((r) => setTimeout(r, 200));
    }
    // What the user ends with: the coupon they were told they won.
    svc.issuer = await startService('issuer', svc.env);
    const repeat = await afterRebuild(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'winner' }));
    expect(repeat.seq).toBe(1n);
    await until('winner ISSUED', async () => (await svc.client.getUserCoupon({ couponId: coupon.id, userId: 'winner' })).userCoupon!.state === UserCouponState.ISSUED);

    for (const got of answers) expect([{ state: 'PENDING', seq: 1n }, { reason: 'BACKEND_UNAVAILABLE' }]).toContainEqual(got);
  });

  it('answers NOT_REQUESTED from the ledger at once for a coupon past its retention, whose gate is never armed again', async () => {
    // An old sale: its keys expired (here: at once, as its deadline is long past) and are never rebuilt.
    const day = 86_400_000;
    const old = await createCoupon(svc.client, 3, { opensInMs: -30 * day, closesInMs: -29 * day, validForMs: -28 * day });
    const started = Date.now();
    const res = await svc.client.getUserCoupon({ couponId: old.id, userId: 'nobody' }, { timeoutMs: 5_000 });
    expect({ state: res.userCoupon!.state, seq: res.userCoupon!.seq }).toEqual({ state: UserCouponState.NOT_REQUESTED, seq: 0n });
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
