// The outbox of coupon.v1.issued (table coupon_issued_outbox, migration 007): the announcements the
// ledger owes downstream services. The issuer's INSERT writes one row for each user_coupons row it
// inserts (store/ledger.ts), in the same statement; these functions clear a row once Kafka
// acknowledged its CouponIssued, and find the rows whose announcement never finished
// (docs/architecture.md#announcing-issued-coupons).
import type { Knex } from 'knex';
import type { Db } from './db.ts';

/** One announcement owed: a ledger row, as the outbox holds it. */
export interface OwedAnnouncement { coupon_id: string; user_id: string; seq: number; issued_at: Date }

/**
 * Clears announcements Kafka acknowledged. Clearing one already cleared (by another pass) does
 * nothing. One statement with two array parameters, however many rows: a batch can hold tens of
 * thousands, more than a statement's 65,535 parameters.
 */
export async function clearAnnouncements(db: Db | Knex.Transaction, rows: readonly Pick<OwedAnnouncement, 'coupon_id' | 'user_id'>[]): Promise<number> {
  if (rows.length === 0) return 0;
  const result = await db.raw<{ rowCount: number }>(
    `DELETE FROM coupon_issued_outbox o USING unnest(?::uuid[], ?::text[]) AS t(coupon_id, user_id)
     WHERE o.coupon_id = t.coupon_id AND o.user_id = t.user_id`,
    [rows.map((r) => r.coupon_id), rows.map((r) => r.user_id)],
  );
  return result.rowCount;
}

/**
 * Up to `limit` announcements owed for longer than `olderThanMs` (by the database's clock), oldest
 * first, locked for the caller's transaction: another issuer's pass skips them (SKIP LOCKED) rather
 * than publishing them a second time at once.
 */
export async function lockStaleAnnouncements(trx: Knex.Transaction, olderThanMs: number, limit: number): Promise<OwedAnnouncement[]> {
  const { rows } = await trx.raw<{ rows: OwedAnnouncement[] }>(
    `SELECT coupon_id, user_id, seq, issued_at FROM coupon_issued_outbox
     WHERE issued_at < now() - make_interval(secs => ?::double precision / 1000)
     ORDER BY issued_at, coupon_id, seq
     LIMIT ? FOR UPDATE SKIP LOCKED`,
    [olderThanMs, limit],
  );
  return rows;
}

/** How many announcements are owed, and since when the oldest (null when none). */
export async function owedAnnouncements(db: Db): Promise<{ rows: number; oldest: Date | null }> {
  const { rows } = await db.raw<{ rows: { n: number; oldest: Date | null }[] }>('SELECT count(*)::int AS n, min(issued_at) AS oldest FROM coupon_issued_outbox');
  return { rows: rows[0]!.n, oldest: rows[0]!.oldest };
}
