// The ledger's copy of the gate's releases (table gate_releases, migration 004). Redis keeps a
// release's tombstone only while it lives; this copy lets the issuer drop the released record even
// after Redis lost the gate (issuer/issue-batch.ts).
import type { Db } from './db.ts';

/** One reservation the gate gave back: the same coupon, user, seq and requested_at as its record. */
export interface GateRelease { couponId: string; userId: string; seq: number; requestedAtMs: number }

export async function recordGateRelease(db: Db, r: GateRelease): Promise<void> {
  await db('gate_releases')
    .insert({ coupon_id: r.couponId, user_id: r.userId, seq: r.seq, requested_at: new Date(r.requestedAtMs) })
    .onConflict(['coupon_id', 'user_id', 'seq', 'requested_at']).ignore();
}
