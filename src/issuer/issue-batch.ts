// The issuer's batch function: decide which records to issue, write them with one bulk INSERT,
// then record the issued state in Redis. Idempotent: a redelivered batch writes nothing twice.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { CouponIssueRequested } from '../../gen/coupon/events/v1/issue_pb.js';
import type { BatchHandler, ConsumedRecord, Rejection } from '../events/batch-consumer.ts';
import type { Logger } from '../log.ts';
import type { Db } from '../store/db.ts';
import type { CouponScripts } from '../store/scripts.ts';

export interface IssueBatchDeps { db: Db; scripts: CouponScripts; log: Logger; stats?: IssueStats }
export interface IssueStats { batches: number; inserts: number; rowsInserted: number; stale: number }

// One statement per batch: insert what is new (skipping unknown coupons and out-of-range seqs),
// bump each touched coupon's issued_count once, mark it complete when full, and return both the
// rows inserted now and the ones the ledger already held (a redelivery), so Redis can be marked.
const ISSUE_SQL = `
WITH input AS (
  SELECT * FROM unnest(?::uuid[], ?::text[], ?::bigint[], ?::timestamptz[]) AS t(coupon_id, user_id, seq, requested_at)
), ins AS (
  INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at)
  SELECT i.coupon_id, i.user_id, i.seq, i.requested_at
  FROM input i JOIN coupons c ON c.id = i.coupon_id
  WHERE i.seq BETWEEN 1 AND c.total_quantity
  ON CONFLICT DO NOTHING
  RETURNING coupon_id, user_id, seq, issued_at
), counts AS (
  SELECT coupon_id, count(*) AS n FROM ins GROUP BY coupon_id
), upd AS (
  UPDATE coupons c
  SET issued_count = c.issued_count + counts.n,
      completed_at = CASE WHEN c.issued_count + counts.n >= c.total_quantity THEN now() ELSE c.completed_at END
  FROM counts WHERE c.id = counts.coupon_id
  RETURNING c.id
)
SELECT coupon_id, user_id, seq, issued_at, true AS inserted FROM ins
UNION ALL
SELECT uc.coupon_id, uc.user_id, uc.seq, uc.issued_at, false FROM user_coupons uc JOIN input i USING (coupon_id, user_id)
UNION ALL
SELECT i.coupon_id, i.user_id, i.seq, NULL, NULL FROM input i LEFT JOIN coupons c ON c.id = i.coupon_id
WHERE c.id IS NULL OR i.seq NOT BETWEEN 1 AND c.total_quantity
`;

interface ResultRow { coupon_id: string; user_id: string; seq: number; issued_at: Date | null; inserted: boolean | null }

export function issueBatch(deps: IssueBatchDeps): BatchHandler<CouponIssueRequested> {
  return async (records) => {
    // Dedupe within the batch, then ask the gate which records are still valid (not released).
    const unique = new Map<string, ConsumedRecord<CouponIssueRequested>>();
    for (const r of records) {
      const key = `${r.value.couponId}\u0000${r.value.userId}`;
      if (!unique.has(key)) unique.set(key, r);
    }
    const byCoupon = Map.groupBy(unique.values(), (r) => r.value.couponId);
    const toWrite: ConsumedRecord<CouponIssueRequested>[] = [];
    for (const [couponId, list] of byCoupon) {
      const verdicts = await deps.scripts.issuerClaim(couponId, list.map((r) => ({ userId: r.value.userId, seq: Number(r.value.seq) })));
      list.forEach((r, i) => { if (verdicts[i]) toWrite.push(r); });
    }
    const stale = unique.size - toWrite.length;
    if (deps.stats) deps.stats.stale += stale;
    if (stale > 0) deps.log.info({ stale }, 'dropped records whose reservation was released');
    if (toWrite.length === 0) return;

    const { rows } = await deps.db.raw<{ rows: ResultRow[] }>(ISSUE_SQL, [
      toWrite.map((r) => r.value.couponId),
      toWrite.map((r) => r.value.userId),
      toWrite.map((r) => String(r.value.seq)),
      toWrite.map((r) => (r.value.requestedAt ? timestampDate(r.value.requestedAt) : new Date()).toISOString()),
    ]);
    if (deps.stats) { deps.stats.batches++; deps.stats.inserts++; deps.stats.rowsInserted += rows.filter((r) => r.inserted).length; }

    const rejected: Rejection<CouponIssueRequested>[] = [];
    const held = rows.filter((r) => r.inserted !== null);
    for (const r of rows.filter((row) => row.inserted === null)) {
      const record = toWrite.find((w) => w.value.couponId === r.coupon_id && w.value.userId === r.user_id);
      if (record) rejected.push({ record, reason: 'UNKNOWN_COUPON_OR_SEQ', error: `coupon ${r.coupon_id} does not exist or seq ${r.seq} is outside 1..total` });
    }
    // A record that is neither written nor already held lost a (coupon_id, seq) conflict: its seq
    // belongs to another user. Only possible after Redis lost gate state; a person must look.
    const heldKeys = new Set(held.map((r) => `${r.coupon_id}\u0000${r.user_id}`));
    const rejectedKeys = new Set(rejected.map((r) => `${r.record.value.couponId}\u0000${r.record.value.userId}`));
    for (const w of toWrite) {
      const key = `${w.value.couponId}\u0000${w.value.userId}`;
      if (!heldKeys.has(key) && !rejectedKeys.has(key)) rejected.push({ record: w, reason: 'SEQ_TAKEN', error: `seq ${w.value.seq} of coupon ${w.value.couponId} is held by another user` });
    }
    for (const [couponId, list] of Map.groupBy(held, (r) => r.coupon_id)) {
      await deps.scripts.issuerMarkIssued(couponId, list.map((r) => ({ userId: r.user_id, seq: Number(r.seq), issuedAtMs: r.issued_at!.getTime() })));
    }
    return { rejected };
  };
}
