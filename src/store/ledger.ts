// The issuer's writes to the ledger (user_coupons, each coupon's issued_count and completed_at, and
// the CouponIssued announcements they owe: coupon_issued_outbox, read and cleared by issued-outbox.ts).
// Reads of the ledger are in coupons.ts.
import type { Db } from './db.ts';

/** One record to write: a reservation the gate gave out. `unarmed`: Redis could not judge it (no gate). */
export interface IssueWrite {
  couponId: string; userId: string; seq: bigint; requestedAt: Date; unarmed: boolean;
  /**
   * A dead letter replayed by an operator (header x-replayed-from): it is judged as any record, never
   * dropped by a fence's bound. Its original may stand before the fence, and its caller may have been
   * told OK; the replay appends it after the fence with its old requested_at.
   */
  replayed: boolean;
}

/**
 * What the ledger did with one record, or holds for its user:
 * - `inserted` true: written now, by this statement (INSERT … RETURNING), and so owed an
 *   announcement; false: the ledger already held the user's row (a redelivery, announced when it
 *   was inserted); null: not written (an unknown coupon, a seq outside 1..total, or a released record).
 * - `released`: the record is of a reservation the gate gave back (gate_releases); `requested_at`
 *   is then the record's, so the caller can tell which of a user's records it was.
 */
export interface IssueResultRow {
  coupon_id: string; user_id: string; seq: number; issued_at: Date | null;
  inserted: boolean | null; requested_at: Date | null; released: boolean;
}

// One statement per batch: insert what is new (skipping unknown coupons and out-of-range seqs),
// owe a CouponIssued for each row inserted now (coupon_issued_outbox, store/issued-outbox.ts),
// bump each touched coupon's issued_count once, mark it complete when full, and return both the
// rows inserted now and the ones the ledger already held (a redelivery), so Redis can be marked.
// A row the ledger already held owes nothing new: its announcement was owed when it was inserted.
// A record Redis could not judge (the gate was lost, tombstones with it: 'UNARMED') that matches a
// release in gate_releases exactly (coupon, user, seq and requested_at) is the record of a
// reservation the gate gave back: it is dropped and returned with released = true. So is one
// reserved before the coupon's last fence's stale_before (coupon_fences, store/fences.ts), unless
// an operator replayed it from the dead-letter topic: it reached the partition after a rebuild's
// fence, so no caller was told OK for it.
// The coupons' rows are locked first (FOR KEY SHARE, which only an operator's change conflicts
// with): a change holds its coupon's row until it commits, after the gate took it
// (catalog/changes.ts), so a seq past the old total may already be handed out; waiting reads the
// total the gate has, instead of judging such a seq out of range against the statement's snapshot.
const ISSUE_SQL = `
WITH input AS (
  SELECT t.coupon_id, t.user_id, t.seq, t.requested_at,
    t.unarmed AND (EXISTS (
      SELECT 1 FROM gate_releases r
      WHERE r.coupon_id = t.coupon_id AND r.user_id = t.user_id AND r.seq = t.seq AND r.requested_at = t.requested_at
    ) OR (NOT t.replayed AND EXISTS (
      SELECT 1 FROM coupon_fences f WHERE f.coupon_id = t.coupon_id AND t.requested_at < f.stale_before
    ))) AS released
  FROM unnest(?::uuid[], ?::text[], ?::bigint[], ?::timestamptz[], ?::boolean[], ?::boolean[]) AS t(coupon_id, user_id, seq, requested_at, unarmed, replayed)
), live AS (
  SELECT coupon_id, user_id, seq, requested_at FROM input WHERE NOT released
), locked AS (
  SELECT id, total_quantity FROM coupons WHERE id IN (SELECT coupon_id FROM live) FOR KEY SHARE
), ins AS (
  INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at)
  SELECT i.coupon_id, i.user_id, i.seq, i.requested_at
  FROM live i JOIN locked c ON c.id = i.coupon_id
  WHERE i.seq BETWEEN 1 AND c.total_quantity
  ON CONFLICT DO NOTHING
  RETURNING coupon_id, user_id, seq, issued_at
), owed AS (
  INSERT INTO coupon_issued_outbox (coupon_id, user_id, seq, issued_at)
  SELECT coupon_id, user_id, seq, issued_at FROM ins
), counts AS (
  SELECT coupon_id, count(*) AS n FROM ins GROUP BY coupon_id
), upd AS (
  UPDATE coupons c
  SET issued_count = c.issued_count + counts.n,
      completed_at = CASE WHEN c.issued_count + counts.n >= c.total_quantity THEN now() ELSE c.completed_at END
  FROM counts WHERE c.id = counts.coupon_id
  RETURNING c.id
)
SELECT coupon_id, user_id, seq, issued_at, true AS inserted, NULL::timestamptz AS requested_at, false AS released FROM ins
UNION ALL
SELECT uc.coupon_id, uc.user_id, uc.seq, uc.issued_at, false, NULL, false FROM user_coupons uc JOIN (SELECT DISTINCT coupon_id, user_id FROM live) i USING (coupon_id, user_id)
UNION ALL
SELECT i.coupon_id, i.user_id, i.seq, NULL, NULL, NULL, false FROM live i LEFT JOIN locked c ON c.id = i.coupon_id
WHERE c.id IS NULL OR i.seq NOT BETWEEN 1 AND c.total_quantity
UNION ALL
SELECT coupon_id, user_id, seq, NULL, NULL, requested_at, true FROM input WHERE released
`;

/** Writes a batch of records in one statement (see ISSUE_SQL); what it did, per record and per user. */
export async function insertIssued(db: Db, writes: readonly IssueWrite[]): Promise<IssueResultRow[]> {
  const { rows } = await db.raw<{ rows: IssueResultRow[] }>(ISSUE_SQL, [
    writes.map((w) => w.couponId),
    writes.map((w) => w.userId),
    writes.map((w) => String(w.seq)),
    writes.map((w) => w.requestedAt.toISOString()),
    writes.map((w) => w.unarmed),
    writes.map((w) => w.replayed),
  ]);
  return rows;
}

/**
 * The ledger rows these users hold, read with a fresh snapshot: rows another issuer committed
 * while insertIssued ran, which its statement could not see (rows as insertIssued returns them,
 * with inserted = false).
 */
export async function heldRows(db: Db, users: readonly (readonly [couponId: string, userId: string])[]): Promise<IssueResultRow[]> {
  return await db('user_coupons')
    .whereIn(['coupon_id', 'user_id'], users as [string, string][])
    .select<IssueResultRow[]>('coupon_id', 'user_id', 'seq', 'issued_at', db.raw('false AS inserted'));
}
