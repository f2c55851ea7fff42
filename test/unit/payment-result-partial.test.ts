// The payment-result handler's decision alone (no broker). docs/redemption.md#a-failed-payment-through-kafka
// promises that for PAYMENT_STATUS_FAILED coupon-issuer "cancels the order's redemption of every
// coupon listed", malformed ids going to the dead-letter topic. When one CouponRef of a failed
// payment is malformed (here a coupon id in braces, a spelling PostgreSQL reads and an older
// producer may send, refused since canonical ids), the whole record is dead-lettered and the
// well-formed coupons of the same order are never cancelled; replaying the dead letter cannot help,
// since it is refused again. Those coupons stay REDEEMED to an order whose payment failed (I5).
import { describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { CouponRefSchema, PaymentResultSchema, PaymentStatus, type PaymentResult } from '../../gen/payment/v1/payment_pb.js';
import type { ConsumedRecord } from '../../src/events/batch-consumer.ts';
import { paymentResultBatch } from '../../src/redemption/payment-batch.ts';
import type { Redemption } from '../../src/redemption/redemption.ts';
import { createLogger } from '../../src/log.ts';

const testLog = createLogger('test', 'silent');

const good = '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70';
const other = '5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';

describe('a failed payment with one malformed coupon reference', () => {
  it('still cancels the order\'s redemption of every well-formed coupon listed', async () => {
    const cancelled: string[] = [];
    const redemption = {
      cancel: (couponId: string, userId: string, orderId: string) => {
        cancelled.push(`${couponId}|${userId}|${orderId}`);
        return Promise.resolve({ outcome: 'CANCELLED', view: {} });
      },
    } as unknown as Redemption;
    const value = create(PaymentResultSchema, {
      orderId: 'order-1',
      status: PaymentStatus.FAILED,
      coupons: [
        create(CouponRefSchema, { couponId: good, userId: 'alice' }),
        create(CouponRefSchema, { couponId: `{${other}}`, userId: 'alice' }),
      ],
    });
    const record = { value, key: 'order-1', partition: 0, offset: '0', message: {} } as unknown as ConsumedRecord<PaymentResult>;
    const result = await paymentResultBatch({ redemption, log: testLog })([record], { heartbeat: () => Promise.resolve() });

    expect(result && result.rejected?.length).toBe(1);
    expect(cancelled).toEqual([`${good}|alice|order-1`]);
  });
});
