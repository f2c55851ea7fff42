// coupon-issuer's ledger writes (issuer/issue-batch.ts).
import { counter, gauge, histogram } from './registry.ts';

export const issuerRows = counter({ name: 'coupon_issuer_rows_total', help: 'Coupons the issuer inserted into the ledger (user_coupons rows).' });
export const issuerLostRecords = counter({
  name: 'coupon_issuer_lost_records_total',
  help: 'Records the issuer dropped because the armed gate holds no reservation for them and no release (claim verdict LOST: a Redis failover lost the reservation).',
});
export const issuerBatchSeconds = histogram({
  name: 'coupon_issuer_batch_seconds',
  help: 'Time the issuer spent on one attempt at a batch: claim in Redis, INSERT, mark issued.',
  labelNames: ['outcome'],
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
});

/** Wraps a batch handler so each attempt is timed in coupon_issuer_batch_seconds. */
export function timedIssueBatch<A extends unknown[], R>(handle: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args) => {
    const end = issuerBatchSeconds.startTimer();
    try {
      const result = await handle(...args);
      end({ outcome: 'ok' });
      return result;
    } catch (err) {
      end({ outcome: 'failed' });
      throw err;
    }
  };
}

// coupon.v1.issued (issuer/announce.ts): what was announced, and what is still owed.
export const issuerAnnounced = counter({
  name: 'coupon_issuer_announced_total',
  help: 'CouponIssued events Kafka acknowledged on coupon.v1.issued: path="inline" right after the ledger commit, path="republished" by the pass over announcements that never finished (a crash, a failed publish).',
  labelNames: ['path'],
});
for (const path of ['inline', 'republished']) issuerAnnounced.inc({ path }, 0);
export const issuerUnannounced = gauge({
  name: 'coupon_issuer_unannounced_rows',
  help: 'Ledger rows whose CouponIssued Kafka has not acknowledged yet (coupon_issued_outbox), at the last announce pass.',
  aggregator: 'max',
});
export const issuerUnannouncedAge = gauge({
  name: 'coupon_issuer_unannounced_oldest_seconds',
  help: 'How long the oldest ledger row without an acknowledged CouponIssued has waited, at the last announce pass; 0 when none.',
  aggregator: 'max',
});
