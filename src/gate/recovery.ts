// Republishes reservations whose publish never finished (the process died between reserve and
// the broker's ack). Duplicates are harmless: the issuer writes each (coupon, user) once.
//
// It walks only the index of active coupons (store/active-coupons.ts), a page at a time with one
// round trip per page, and drops from it the coupons left with nothing to recover, so an idle
// system does no work per old coupon (docs/design.md#growth).
import type { Redis } from '../store/redis.ts';
import type { Logger } from '../log.ts';
import { IDLE_MS, type ActiveCoupons } from '../store/active-coupons.ts';
import { couponKeys } from '../store/keys.ts';
import type { CouponScripts } from '../store/scripts.ts';
import { gateConfirm, gateStale, type StaleReservation } from './gate-scripts.ts';
import { publishReservation, type GateDeps } from './gate.ts';

export interface GateRecoveryDeps extends Pick<GateDeps, 'encoder' | 'publisher' | 'topic'> {
  redis: Redis;
  scripts: CouponScripts;
  /** The coupons that may hold pending reservations or outbox entries (gate:active under KAFKA_TOPIC_PREFIX). */
  active: ActiveCoupons;
  /** The index kept before gate:active, drained into it a batch per pass. */
  legacyIndexKey?: string;
  log: Logger;
  now?: () => number;
}

/** What one pass did: coupons looked at, reservations republished, idle coupons dropped from the index. */
export interface RecoveryPass { visited: number; republished: number; dropped: number }

export async function recoverStaleReservations(d: GateRecoveryDeps, staleMs: number, idleMs = IDLE_MS): Promise<RecoveryPass> {
  const now = (d.now ?? Date.now)();
  const cutoff = now - staleMs;
  const pass: RecoveryPass = { visited: 0, republished: 0, dropped: 0 };
  if (d.legacyIndexKey) await d.active.drainLegacy(d.legacyIndexKey);
  for await (const page of d.active.pages()) {
    pass.visited += page.length;
    // One round trip for the page (the calls go out in the same tick): each coupon's stale
    // reservations, each paired with its own seq in one script, and whether it still holds anything
    // the recovery loops look after.
    // The republished records' publish bound counts from before they were read (publishReservation).
    const readAt = Date.now();
    const looks = await Promise.all(page.map(({ couponId }) => {
      const k = couponKeys(couponId);
      return Promise.all([gateStale(d.scripts, couponId, cutoff, 1000), d.redis.zcard(k.pending), d.redis.zcard(k.outbox)] as const);
    }));
    const idle = page.filter((c, i) => looks[i]![1] === 0 && looks[i]![2] === 0 && c.lastActiveMs <= now - idleMs);
    pass.dropped += await d.active.dropIdle(idle.map((c) => c.couponId), now - idleMs);
    const counts = await Promise.all(page.map(({ couponId }, i) => {
      const stale = looks[i]![0];
      return stale.length > 0 ? republish(d, couponId, stale, readAt) : Promise.resolve(0);
    }));
    pass.republished += counts.reduce((a, b) => a + b, 0);
  }
  if (pass.republished > 0) d.log.warn({ republished: pass.republished }, 'recovered reservations whose publish had not finished');
  d.log.debug(pass, 'gate recovery pass');
  return pass;
}

/**
 * Republishes one coupon's stale reservations, each with its own seq and reservation time, and then
 * confirms exactly that reservation: a newer one of the same user (made after a release while this
 * ran) is neither published with the old time nor dropped from the journal.
 */
async function republish(d: GateRecoveryDeps, couponId: string, stale: StaleReservation[], readAt: number): Promise<number> {
  // Informational in the event (the issuer checks seqs against the ledger's total); 0 if meta is gone.
  const total = Number(await d.redis.hget(couponKeys(couponId).meta, 'total')) || 0;
  // All at once: they share one publish bound, counted from when they were read.
  await Promise.all(stale.map(async ({ userId, seq, reservedAtMs }) => {
    await publishReservation(d, couponId, userId, seq, reservedAtMs, total, readAt);
    await gateConfirm(d.scripts, couponId, userId, seq, reservedAtMs);
  }));
  return stale.length;
}
