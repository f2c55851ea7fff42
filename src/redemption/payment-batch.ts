// Compensation through Kafka: a PaymentResult with PAYMENT_STATUS_FAILED cancels the order's
// redemptions. Each cancel is the same idempotent CancelRedemption the payment service can call,
// so a result delivered twice (or a batch retried) restores the coupon once.
import type { PaymentResult } from '../../gen/payment/v1/payment_pb.js';
import { PaymentStatus } from '../../gen/payment/v1/payment_pb.js';
import { DomainError } from '../domain/errors.ts';
import type { BatchHandler, ConsumedRecord, Rejection } from '../events/batch-consumer.ts';
import type { Logger } from '../log.ts';
import { requireCouponId, requireId } from '../domain/ids.ts';
import type { CancelOutcome, Redemption } from './redemption.ts';

export interface PaymentResultStats { failedPayments: number; cancelled: number; unchanged: number; mismatched: number }

export function paymentResultBatch(deps: { redemption: Redemption; log: Logger; stats?: PaymentResultStats }): BatchHandler<PaymentResult> {
  return async (records) => {
    const rejected: Rejection<PaymentResult>[] = [];
    const cancels: { record: ConsumedRecord<PaymentResult>; couponId: string; userId: string }[] = [];
    for (const record of records) {
      const p = record.value;
      if (p.status !== PaymentStatus.FAILED) continue;
      try {
        requireId('order_id', p.orderId);
      } catch (err) {
        rejected.push({ record, reason: 'INVALID_FIELD', error: (err as Error).message });
        continue;
      }
      // A malformed reference sends the record to the dead-letter topic, but never holds back the
      // order's well-formed ones: their coupons are given back now (a replay repeats those cancels,
      // which are idempotent, and refuses the malformed one again).
      const problems: string[] = [];
      for (const ref of p.coupons) {
        try {
          cancels.push({ record, couponId: requireCouponId('coupon_id', ref.couponId), userId: requireId('user_id', ref.userId) });
        } catch (err) {
          problems.push((err as Error).message);
        }
      }
      if (problems.length > 0) rejected.push({ record, reason: 'INVALID_FIELD', error: problems.join('; ') });
    }
    const valid = cancels;

    const settled = await Promise.allSettled(valid.map((c) => deps.redemption.cancel(c.couponId, c.userId, c.record.value.orderId)));
    let retryable: Error | undefined;
    settled.forEach((s, i) => {
      const c = valid[i]!;
      const ids = { orderId: c.record.value.orderId, couponId: c.couponId, userId: c.userId };
      if (s.status === 'fulfilled') {
        count(deps.stats, s.value.outcome);
        return;
      }
      const err = s.reason as unknown;
      if (err instanceof DomainError && err.reason === 'ORDER_MISMATCH') {
        // Another order holds the coupon: this failed order has nothing to give back.
        if (deps.stats) deps.stats.mismatched++;
        deps.log.info(ids, 'failed payment: the coupon is redeemed by another order; nothing to cancel');
      } else if (err instanceof DomainError && err.reason === 'COUPON_NOT_FOUND') {
        if (!rejected.some((r) => r.record === c.record)) rejected.push({ record: c.record, reason: 'COUPON_NOT_FOUND', error: err.message });
      } else {
        // Kafka, Redis or PostgreSQL trouble: retry the batch; what already succeeded is a no-op then.
        retryable ??= err instanceof Error ? err : new Error(String(err));
      }
    });
    if (retryable !== undefined) throw retryable;
    if (deps.stats) deps.stats.failedPayments += new Set(valid.map((c) => c.record)).size;
    return { rejected };
  };
}

function count(stats: PaymentResultStats | undefined, outcome: CancelOutcome): void {
  if (!stats) return;
  if (outcome === 'UNCHANGED') stats.unchanged++;
  else stats.cancelled++;
}
