// The redemption ledger in PostgreSQL, the record Redis state is rebuilt from.
// - The consumer applies CouponRedemptionChanged events, one statement per batch. Idempotent and
//   order-proof: a change is applied only when its version is newer than the row's, so
//   redeliveries, republished duplicates and stragglers change nothing.
// - The reads give back what restoreRedemption needs after Redis lost its state.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { RedemptionTransition, type CouponRedemptionChanged } from '../../gen/coupon/events/v1/redemption_pb.js';
import type { BatchHandler, ConsumedRecord, Rejection } from '../events/batch-consumer.ts';
import { isUuid } from '../domain/ids.ts';
import { REPLAYED_HEADER } from '../events/replay.ts';
import type { Logger } from '../log.ts';
import { seqWindows, type UserCouponRow } from '../store/coupons.ts';
import type { Db } from '../store/db.ts';
import type { LedgerRedemptionRecord } from './redemption-scripts.ts';

export interface LedgerStats { batches: number; applied: number; cancellations: number; stale: number }

// - latest: the newest change per (coupon, user) in the batch; it alone decides the row's state.
// - applied: the row takes it only if it is newer than what the row has (redemption_version).
// - cancelled: every cancelled order is remembered, whatever its version, so a late redeem of it
//   is refused even after Redis lost its cancelled set. A version 0 cancellation (an order
//   cancelled while another order held the coupon) only does this: it never changes the row.
// - stale: a change read after a load's fence (redemption_fences, store/fences.ts) and made
//   before its bound was made on the Redis that was lost, and reached the partition after the
//   fence, so its caller was never told OK; the reloaded state may have made a change with the same
//   version since, which it must not shadow. Dropped, unless an operator replayed it from the
//   dead-letter topic (its original may stand before the fence, told OK).
// - orphans: a redemption for a coupon the ledger never issued. Redis marks a coupon issued only
//   after its row committed, so this means something is badly wrong: a person must look.
const APPLY_SQL = `
WITH given AS (
  SELECT * FROM unnest(?::uuid[], ?::text[], ?::text[], ?::int[], ?::timestamptz[], ?::bigint[], ?::boolean[])
    AS t(coupon_id, user_id, order_id, transition, occurred_at, version, replayed)
), input AS (
  SELECT g.* FROM given g WHERE g.replayed OR NOT EXISTS (
    SELECT 1 FROM redemption_fences f WHERE f.coupon_id = g.coupon_id AND g.occurred_at < f.stale_before)
), latest AS (
  SELECT DISTINCT ON (coupon_id, user_id) * FROM input WHERE version > 0 ORDER BY coupon_id, user_id, version DESC
), applied AS (
  UPDATE user_coupons uc
  SET order_id = CASE WHEN l.transition = ${RedemptionTransition.REDEEMED} THEN l.order_id END,
      redeemed_at = CASE WHEN l.transition = ${RedemptionTransition.REDEEMED} THEN l.occurred_at END,
      redemption_version = l.version
  FROM latest l
  WHERE uc.coupon_id = l.coupon_id AND uc.user_id = l.user_id AND uc.redemption_version < l.version
  RETURNING 1
), cancelled AS (
  INSERT INTO redemption_cancellations (coupon_id, user_id, order_id, cancelled_at)
  SELECT DISTINCT ON (i.coupon_id, i.user_id, i.order_id) i.coupon_id, i.user_id, i.order_id, i.occurred_at
  FROM input i JOIN coupons c ON c.id = i.coupon_id
  WHERE i.transition = ${RedemptionTransition.CANCELLED}
  ORDER BY i.coupon_id, i.user_id, i.order_id, i.version
  ON CONFLICT DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM applied)::int AS applied, (SELECT count(*) FROM cancelled)::int AS cancellations,
  ((SELECT count(*) FROM given) - (SELECT count(*) FROM input))::int AS stale,
  COALESCE((SELECT json_agg(json_build_array(i.coupon_id, i.user_id, i.version)) FROM input i
    WHERE i.transition = ${RedemptionTransition.REDEEMED}
      AND NOT EXISTS (SELECT 1 FROM user_coupons uc WHERE uc.coupon_id = i.coupon_id AND uc.user_id = i.user_id)), '[]') AS orphans
`;

interface ApplyRow { applied: number; cancellations: number; stale: number; orphans: [string, string, number | string][] }

export function redemptionLedgerBatch(deps: { db: Db; log: Logger; stats?: LedgerStats }): BatchHandler<CouponRedemptionChanged> {
  return async (records) => {
    const rejected: Rejection<CouponRedemptionChanged>[] = [];
    const valid: ConsumedRecord<CouponRedemptionChanged>[] = [];
    for (const record of records) {
      const e = record.value;
      const problem = !isUuid(e.couponId) ? 'coupon_id is not a UUID'
        : !e.userId ? 'user_id is empty'
          : e.transition !== RedemptionTransition.REDEEMED && e.transition !== RedemptionTransition.CANCELLED ? `transition ${e.transition} is not REDEEMED or CANCELLED`
            : e.version < 0n || (e.version === 0n && e.transition !== RedemptionTransition.CANCELLED) ? `version ${e.version} is not positive`
              : undefined;
      if (problem) rejected.push({ record, reason: 'INVALID_EVENT', error: problem });
      else {
        // Another spelling of the coupon's UUID (an older producer) names the same coupon.
        e.couponId = e.couponId.toLowerCase();
        valid.push(record);
      }
    }
    if (valid.length === 0) return { rejected };

    const { rows } = await deps.db.raw<{ rows: ApplyRow[] }>(APPLY_SQL, [
      valid.map((r) => r.value.couponId),
      valid.map((r) => r.value.userId),
      valid.map((r) => r.value.orderId),
      valid.map((r) => r.value.transition),
      valid.map((r) => (r.value.occurredAt ? timestampDate(r.value.occurredAt) : new Date()).toISOString()),
      valid.map((r) => String(r.value.version)),
      valid.map((r) => r.message.headers?.[REPLAYED_HEADER] !== undefined),
    ]);
    const result = rows[0]!;
    if (deps.stats) {
      deps.stats.batches++;
      deps.stats.applied += result.applied;
      deps.stats.cancellations += result.cancellations;
      deps.stats.stale += result.stale;
    }
    if (result.stale > 0) deps.log.warn({ stale: result.stale }, "dropped redemption changes that reached Kafka after a load's fence (never acknowledged)");
    for (const [couponId, userId, version] of result.orphans) {
      const record = valid.find((r) => r.value.couponId === couponId && r.value.userId === userId && r.value.version === BigInt(version));
      if (record) rejected.push({ record, reason: 'NOT_IN_LEDGER', error: `coupon ${couponId} of user ${userId} is not issued in the ledger` });
    }
    return { rejected };
  };
}

/** A ledger row as the redemption value Redis holds ("<R|C>|<order id>|<version>|<at ms>"). */
function redemptionValue(row: Pick<UserCouponRow, 'order_id' | 'redeemed_at' | 'redemption_version'>): string {
  if (row.order_id) return `R|${row.order_id}|${row.redemption_version}|${row.redeemed_at?.getTime() ?? 0}`;
  return row.redemption_version > 0 ? `C||${row.redemption_version}|0` : '';
}

type RestoreRow = Pick<UserCouponRow, 'user_id' | 'seq' | 'issued_at' | 'order_id' | 'redeemed_at' | 'redemption_version'>;
const RESTORE_COLUMNS = ['user_id', 'seq', 'issued_at', 'order_id', 'redeemed_at', 'redemption_version'] as const;

const rowRecord = (row: RestoreRow): LedgerRedemptionRecord => ({
  kind: 'row', userId: row.user_id, seq: row.seq, issuedAtMs: row.issued_at.getTime(), value: redemptionValue(row), version: row.redemption_version,
});

/** Records per page when loading a coupon's redemption state: a load holds one page, never the coupon. */
export const REDEMPTION_PAGE = 5_000;

/**
 * Every redemption change the ledger holds for the coupon, a page at a time: the rows that ever
 * changed (read by seq window, so each query is one bounded index range: store/coupons.ts
 * seqWindows), then the cancelled orders (also those of users whose coupon was still pending when
 * cancelled), by keyset on their primary key.
 */
export async function* couponRedemptions(db: Db, couponId: string, pageSize = REDEMPTION_PAGE): AsyncGenerator<LedgerRedemptionRecord[]> {
  for await (const [from, to] of seqWindows(db, couponId, pageSize)) {
    const rows = await db<UserCouponRow>('user_coupons').where({ coupon_id: couponId })
      .andWhere('seq', '>', from).andWhere('seq', '<=', to).andWhere('redemption_version', '>', 0)
      .select<RestoreRow[]>(...RESTORE_COLUMNS);
    if (rows.length > 0) yield rows.map(rowRecord);
  }
  for (let after: { userId: string; orderId: string } | undefined; ;) {
    const query = db('redemption_cancellations').where({ coupon_id: couponId })
      .orderBy([{ column: 'user_id' }, { column: 'order_id' }]).limit(pageSize)
      .select<{ user_id: string; order_id: string }[]>('user_id', 'order_id');
    if (after) query.andWhereRaw('(user_id, order_id) > (?, ?)', [after.userId, after.orderId]);
    const cancelled = await query;
    if (cancelled.length > 0) yield cancelled.map((c): LedgerRedemptionRecord => ({ kind: 'cancelled', userId: c.user_id, orderId: c.order_id }));
    if (cancelled.length < pageSize) return;
    const last = cancelled.at(-1)!;
    after = { userId: last.user_id, orderId: last.order_id };
  }
}

/** One user's ledger row as a restore record; undefined when the ledger has not issued them the coupon. */
export async function userRedemption(db: Db, couponId: string, userId: string): Promise<LedgerRedemptionRecord | undefined> {
  const row = await db<UserCouponRow>('user_coupons').where({ coupon_id: couponId, user_id: userId }).first<RestoreRow | undefined>(...RESTORE_COLUMNS);
  return row && rowRecord(row);
}
