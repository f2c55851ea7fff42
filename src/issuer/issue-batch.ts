// The issuer's batch function: decide which records to issue, write them with one bulk INSERT,
// then record the issued state in Redis. Idempotent: a redelivered batch writes nothing twice.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { CouponIssueRequested } from '../../gen/coupon/events/v1/issue_pb.js';
import type { BatchHandler, ConsumedRecord, Rejection } from '../events/batch-consumer.ts';
import { idProblem, isUuid } from '../domain/ids.ts';
import type { Logger } from '../log.ts';
import { issuerLostRecords, issuerRows, timedIssueBatch } from '../metrics/issuer.ts';
import { dbSpan } from '../telemetry/tracing.ts';
import type { Db } from '../store/db.ts';
import type { CouponScripts } from '../store/scripts.ts';
import { couponKeys } from '../store/keys.ts';
import type { ReplicaAcks } from '../store/replica-acks.ts';

export interface IssueBatchDeps {
  /**
   * REDIS_WAIT_REPLICAS: a record is written to the ledger only once replicas hold its claim, and
   * so the reservation before it: a failover then cannot hand its seq to someone else.
   */
  acks?: ReplicaAcks | undefined;
  db: Db; scripts: CouponScripts; log: Logger; stats?: IssueStats;
  /** Told which coupons each batch wrote, for the periodic reconcile. */
  onCoupons?: (couponIds: Iterable<string>) => void;
}
export interface IssueStats { batches: number; inserts: number; rowsInserted: number; stale: number }

// One statement per batch: insert what is new (skipping unknown coupons and out-of-range seqs),
// bump each touched coupon's issued_count once, mark it complete when full, and return both the
// rows inserted now and the ones the ledger already held (a redelivery), so Redis can be marked.
// A record Redis could not judge (the gate was lost, tombstones with it: 'UNARMED') that matches a
// release in gate_releases exactly (coupon, user, seq and requested_at) is the record of a
// reservation the gate gave back: it is dropped and returned with released = true.
// The coupons' rows are locked first (FOR KEY SHARE, which only an operator's change conflicts
// with): a change holds its coupon's row until it commits, after the gate took it
// (catalog/changes.ts), so a seq past the old total may already be handed out; waiting reads the
// total the gate has, instead of judging such a seq out of range against the statement's snapshot.
const ISSUE_SQL = `
WITH input AS (
  SELECT t.coupon_id, t.user_id, t.seq, t.requested_at,
    t.unarmed AND EXISTS (
      SELECT 1 FROM gate_releases r
      WHERE r.coupon_id = t.coupon_id AND r.user_id = t.user_id AND r.seq = t.seq AND r.requested_at = t.requested_at
    ) AS released
  FROM unnest(?::uuid[], ?::text[], ?::bigint[], ?::timestamptz[], ?::boolean[]) AS t(coupon_id, user_id, seq, requested_at, unarmed)
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

/** No coupon holds more (coupons_total_quantity_range); far below Number.MAX_SAFE_INTEGER. */
const MAX_SEQ = 10_000_000n;

interface ResultRow { coupon_id: string; user_id: string; seq: number; issued_at: Date | null; inserted: boolean | null; requested_at: Date | null; released: boolean }

export function issueBatch(deps: IssueBatchDeps): BatchHandler<CouponIssueRequested> {
  return timedIssueBatch(async (records) => {
    // Every record is judged on its own: a user's stale record (its reservation was released after
    // a publish that "failed" but landed) may sit in the same batch as the same user's live one,
    // and only the live one may be issued. So the gate is asked about each record, and only exact
    // duplicates (same coupon, user, seq and requested_at: redeliveries, republished reservations)
    // are merged. A record no gate could have written (a bad id, a seq below 1) is poison on its
    // own; it must not fail the batch it came with.
    const invalid: Rejection<CouponIssueRequested>[] = [];
    const wellFormed = records.filter((record) => {
      const e = record.value;
      const problem = !isUuid(e.couponId) ? 'coupon_id is not a UUID' : idProblem(e.userId) ? `user_id ${idProblem(e.userId)}` : e.seq < 1n ? `seq ${e.seq} is not positive` : undefined;
      if (problem) invalid.push({ record, reason: 'INVALID_EVENT', error: problem });
      // Beyond every coupon's total, and beyond what a JS number holds exactly: judged here, before
      // Number(seq) could round it into something else.
      else if (e.seq > MAX_SEQ) invalid.push({ record, reason: 'UNKNOWN_COUPON_OR_SEQ', error: `seq ${e.seq} is outside 1..total of any coupon` });
      // A producer older than canonical ids may have sent another spelling of the coupon's UUID:
      // the gate's keys and the ledger know the coupon by its lower-case form only.
      else e.couponId = e.couponId.toLowerCase();
      return !problem && e.seq <= MAX_SEQ;
    });
    const toWrite: { record: ConsumedRecord<CouponIssueRequested>; unarmed: boolean }[] = [];
    let outOfRange = 0;
    const confirms: Promise<void>[] = [];
    for (const [couponId, list] of Map.groupBy(wellFormed, (r) => r.value.couponId)) {
      // Taken before the claim is sent: the wait goes to the node that ran it, and is refused if
      // the slot moved meanwhile (store/replica-acks.ts).
      const meta = couponKeys(couponId).meta;
      const node = deps.acks?.nodeOf(meta);
      const verdicts = await deps.scripts.issuerClaim(couponId, list.map((r) => ({ userId: r.value.userId, seq: Number(r.value.seq) })));
      if (deps.acks?.enabled) {
        const confirmed = deps.acks.confirm(meta, node);
        // Awaited below, after the other coupons' claims: a refusal meanwhile is not unhandled.
        confirmed.catch(() => undefined);
        confirms.push(confirmed);
      }
      list.forEach((record, i) => {
        const verdict = verdicts[i];
        if (verdict === 'OUT_OF_RANGE') {
          // No gate wrote it and no replay can issue it: poison, dead-lettered with an alert, the
          // same verdict the ledger gives it when the gate is unarmed.
          invalid.push({ record, reason: 'UNKNOWN_COUPON_OR_SEQ', error: `seq ${record.value.seq} is outside 1..total of coupon ${couponId}` });
          outOfRange++;
        } else if (verdict === 'LOST') {
          // A Redis failover lost this reservation (issuer-claim.lua): its user was never told OK
          // (OK waits for a replica, REDIS_WAIT_REPLICAS), and its seq may be another user's now.
          // Counted, for the alert (CouponIssuerRecordsLost): a person checks the user was not told OK.
          issuerLostRecords.inc();
          deps.log.warn({ coupon_id: couponId, user_id: record.value.userId, seq: Number(record.value.seq) }, 'dropped a record whose reservation the gate no longer holds');
        } else if (verdict !== 'STALE') toWrite.push({ record, unarmed: verdict === 'UNARMED' });
      });
    }
    // Unconfirmed: the batch fails and is retried (Redis trouble), nothing reaches the ledger.
    await Promise.all(confirms);
    // requested_at is part of a record's identity: a user can win the same seq again after a
    // release, and only the released reservation's record may be dropped (gate_releases).
    const requestedAt = (r: ConsumedRecord<CouponIssueRequested>) => (r.value.requestedAt ? timestampDate(r.value.requestedAt) : new Date());
    const unique = new Map<string, { record: ConsumedRecord<CouponIssueRequested>; unarmed: boolean; requestedAt: Date }>();
    for (const w of toWrite) {
      const at = requestedAt(w.record);
      unique.set(recordKey(w.record.value.couponId, w.record.value.userId, Number(w.record.value.seq), at.getTime()), { ...w, requestedAt: at });
    }
    let stale = wellFormed.length - toWrite.length - outOfRange;
    if (unique.size === 0) {
      countStale(deps, stale);
      return { rejected: invalid };
    }
    const writes = [...unique.values()];

    const { rows } = await dbSpan('INSERT', 'user_coupons', () => deps.db.raw<{ rows: ResultRow[] }>(ISSUE_SQL, [
      writes.map((w) => w.record.value.couponId),
      writes.map((w) => w.record.value.userId),
      writes.map((w) => String(w.record.value.seq)),
      writes.map((w) => w.requestedAt.toISOString()),
      writes.map((w) => w.unarmed),
    ]));
    if (deps.stats) { deps.stats.batches++; deps.stats.inserts++; deps.stats.rowsInserted += rows.filter((r) => r.inserted).length; }
    const released = new Set(rows.filter((r) => r.released).map((r) => recordKey(r.coupon_id, r.user_id, Number(r.seq), r.requested_at!.getTime())));
    stale += released.size;
    countStale(deps, stale);
    issuerRows.inc(rows.filter((r) => r.inserted).length);

    const rejected: Rejection<CouponIssueRequested>[] = [...invalid];
    const held = rows.filter((r) => r.inserted !== null);
    for (const r of rows.filter((row) => row.inserted === null && !row.released)) {
      const w = writes.find((x) => x.record.value.couponId === r.coupon_id && x.record.value.userId === r.user_id);
      if (w) rejected.push({ record: w.record, reason: 'UNKNOWN_COUPON_OR_SEQ', error: `coupon ${r.coupon_id} does not exist or seq ${r.seq} is outside 1..total` });
    }
    // A record that is neither written nor already held lost a (coupon_id, seq) conflict: its seq
    // belongs to another user. Only possible after Redis lost gate state; a person must look.
    const heldKeys = new Set(held.map((r) => `${r.coupon_id}\u0000${r.user_id}`));
    const rejectedKeys = new Set(rejected.map((r) => `${r.record.value.couponId}\u0000${r.record.value.userId}`));
    const unresolved = writes.filter(({ record: w, requestedAt: at }) => {
      if (released.has(recordKey(w.value.couponId, w.value.userId, Number(w.value.seq), at.getTime()))) return false;
      const key = `${w.value.couponId}\u0000${w.value.userId}`;
      return !heldKeys.has(key) && !rejectedKeys.has(key);
    });
    if (unresolved.length > 0) {
      // The statement's snapshot cannot see a row another issuer committed while it ran (a batch
      // redelivered to a new group member during a rebalance), yet ON CONFLICT skipped it. Ask again
      // with a fresh snapshot before calling the seq taken.
      const late = await deps.db('user_coupons')
        .whereIn(['coupon_id', 'user_id'], unresolved.map(({ record: w }) => [w.value.couponId, w.value.userId]))
        .select<ResultRow[]>('coupon_id', 'user_id', 'seq', 'issued_at', deps.db.raw('false AS inserted'));
      for (const r of late) { held.push(r); heldKeys.add(`${r.coupon_id}\u0000${r.user_id}`); }
    }
    for (const { record: w } of unresolved) {
      if (!heldKeys.has(`${w.value.couponId}\u0000${w.value.userId}`)) rejected.push({ record: w, reason: 'SEQ_TAKEN', error: `seq ${w.value.seq} of coupon ${w.value.couponId} is held by another user` });
    }
    deps.onCoupons?.(new Set(held.map((r) => r.coupon_id)));
    for (const [couponId, list] of Map.groupBy(held, (r) => r.coupon_id)) {
      await deps.scripts.issuerMarkIssued(couponId, list.map((r) => ({ userId: r.user_id, seq: Number(r.seq), issuedAtMs: r.issued_at!.getTime() })));
    }
    return { rejected };
  });
}

const recordKey = (couponId: string, userId: string, seq: number, requestedAtMs: number) => `${couponId}\u0000${userId}\u0000${seq}\u0000${requestedAtMs}`;

function countStale(deps: IssueBatchDeps, stale: number): void {
  if (deps.stats) deps.stats.stale += stale;
  if (stale > 0) deps.log.info({ stale }, 'dropped records whose reservation was released');
}
