// Retention (docs/architecture.md#retention): when a finished coupon's Redis state may go. The gate
// arms a coupon with the deadline, the issuer sets it when the last unit is issued (through meta's
// retention_ms), and redemption uses it for state it loads from the ledger while there is no gate.

/** The ledger fields retention is decided from (a subset of store/coupons.ts CouponRow). */
export interface RetentionFacts { closes_at: Date | null; completed_at: Date | null; valid_until: Date | null }

/**
 * When a coupon's Redis state may go, 0 for never. A coupon is finished once it can no longer be
 * issued (after closes_at, or once complete: sold out and every unit issued) nor redeemed (after
 * valid_until); its state then stays `retentionMs` longer. A coupon without valid_until can be
 * redeemed forever, and one with neither closes_at nor a completion can still be issued, so those
 * keep their state. Later reads come from the ledger.
 */
export function retentionDeadline(row: RetentionFacts, retentionMs: number): number {
  const issuingEnds = row.closes_at ?? row.completed_at;
  if (!row.valid_until || !issuingEnds) return 0;
  return Math.max(issuingEnds.getTime(), row.valid_until.getTime()) + retentionMs;
}

/**
 * The deadline for keys written while the coupon has no gate in Redis (redemption state restored
 * from the ledger): the one arming will set, or, for a coupon already past it that someone still
 * asks about, `retentionMs` from now. One value per load, so the keys of one load expire together.
 */
export function deadlineWithoutGate(row: RetentionFacts, retentionMs: number, nowMs: number): number {
  const deadline = retentionDeadline(row, retentionMs);
  return deadline === 0 || deadline > nowMs ? deadline : nowMs + retentionMs;
}
