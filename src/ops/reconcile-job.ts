// coupon-issuer's periodic reconciliation: every RECONCILE_INTERVAL_MS it checks the coupons it
// issued for within the last RECENT_MS (never every coupon ever created), logs each drift,
// and exports coupon_reconcile_drift{kind}: the number of coupons with that kind of drift at the
// last pass (alert rule: ops/prometheus/alerts.yml).
import { every } from '../lib/every.ts';
import { reconcileDrift as drift } from '../metrics/reconcile.ts';
import type { Logger } from '../log.ts';
import { reconcileCoupon, type DriftKind, type ReconcileDeps } from './reconcile.ts';

const KINDS: DriftKind[] = ['ledger_count', 'over_issued', 'issued_not_accepted', 'seq_mismatch', 'accepted_not_issued', 'issued_state_ahead', 'redeemed_mismatch'];
// A coupon is checked on every pass for this long after the issuer last wrote for it.
const RECENT_MS = 10 * 60_000;

export interface ReconcileJob { touched(couponIds: Iterable<string>): void; stop(): void }

export function startReconcileJob(deps: ReconcileDeps, intervalMs: number, log: Logger): ReconcileJob {
  const recent = new Map<string, number>();
  // Coupons with drift stay on the list until a pass finds them clean.
  const drifting = new Set<string>();
  for (const kind of KINDS) drift.set({ kind }, 0);
  const pass = async () => {
    const cutoff = Date.now() - RECENT_MS;
    for (const [id, at] of recent) if (at < cutoff) recent.delete(id);
    const ids = new Set([...recent.keys(), ...drifting]);
    const counts = new Map<DriftKind, number>(KINDS.map((k) => [k, 0]));
    for (const id of ids) {
      const report = await reconcileCoupon(deps, id).catch((err: unknown) => { log.warn({ couponId: id, err: (err as Error).message }, 'reconcile pass could not check a coupon'); return undefined; });
      if (!report) continue;
      if (report.drift.length === 0) { drifting.delete(id); continue; }
      drifting.add(id);
      for (const d of report.drift) counts.set(d.kind, (counts.get(d.kind) ?? 0) + 1);
      log.warn({ couponId: id, drift: report.drift, redis: report.redis, postgres: report.postgres, kafka: report.kafka }, 'reconcile drift');
    }
    for (const [kind, n] of counts) drift.set({ kind }, n);
  };
  const loop = every(intervalMs, pass, (err) => log.warn({ err: err.message }, 'reconcile pass failed'), { unref: true });
  return {
    touched(couponIds) { const now = Date.now(); for (const id of couponIds) recent.set(id, now); },
    stop() { loop.stop(); },
  };
}
