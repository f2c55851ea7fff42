// The bounds behind rebuilds' fences, kept in the ledger (docs/decisions/0010-rebuild-only-from-settled-facts.md).
// When a consumer that writes the ledger passes a fence record (events/fence.ts) on its topic, it
// records the fence's bound for the coupon: SETTLE_MARGIN_MS before the fence's marker, the moment
// the rebuild was allowed to start (Redis time: the loss first noticed + PUBLISH_TIMEOUT_MS +
// SETTLE_MARGIN_MS; store/loss-guard.ts fenceBoundMs). Every record acknowledged before the loss was
// made before the loss was noticed, and the rebuilt state takes nothing with an earlier time (the
// gate's reservation floor, gate-load.lua; redemption's change floor, restore-redemption.lua), so a
// record behind the fence made before the bound was never answered OK. The ledger drops those:
// - coupon_fences, the issue topic's: ISSUE_SQL (store/ledger.ts) drops such a record while Redis
//   cannot judge it;
// - redemption_fences, the redemption topic's: APPLY_SQL (redemption/ledger.ts) drops such a change,
//   which would otherwise shadow the reloaded state's change of the same version.
// A replayed dead letter is never dropped by a bound: its original may stand before the fence.
import { canonicalCouponId } from '../domain/ids.ts';
import type { Logger } from '../log.ts';
import type { Db } from './db.ts';
import { fenceBoundMs } from './loss-guard.ts';

export type FenceTable = 'coupon_fences' | 'redemption_fences';

/**
 * A consumer's onFence (events/batch-consumer.ts) that records the fence's bound in `table`. A later
 * fence moves the bound on, an earlier one never back. A fence that names no coupon or no time is
 * ignored.
 */
export function fenceRecorder(deps: { db: Db; log: Logger }, table: FenceTable): (fence: { key: string | null; marker: string }) => Promise<void> {
  return async ({ key, marker }) => {
    const couponId = key === null ? undefined : canonicalCouponId(key);
    const bound = fenceBoundMs(marker);
    if (!couponId || bound === 0) {
      deps.log.warn({ key, marker, table }, 'ignored a fence record that names no coupon or no time');
      return;
    }
    await deps.db.raw(`INSERT INTO ${table} (coupon_id, stale_before) VALUES (?, ?)
      ON CONFLICT (coupon_id) DO UPDATE SET stale_before = GREATEST(${table}.stale_before, EXCLUDED.stale_before)`, [couponId, new Date(bound).toISOString()]);
  };
}
