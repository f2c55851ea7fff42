// The issuer's batch function, in six steps: validate each record, claim the valid ones in Redis,
// write the claimed ones to the ledger with one statement (store/ledger.ts), announce the rows
// written now (issuer/announce.ts), classify what the ledger did with each record, and mark the
// held ones issued in Redis. Idempotent: a redelivered batch writes nothing twice, and so
// announces nothing twice.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { CouponIssueRequested } from '../../gen/coupon/events/v1/issue_pb.js';
import type { BatchHandler, ConsumedRecord, Rejection } from '../events/batch-consumer.ts';
import { REPLAYED_HEADER } from '../events/replay.ts';
import { idProblem, isUuid } from '../domain/ids.ts';
import type { Logger } from '../log.ts';
import { issuerLostRecords, issuerRows, timedIssueBatch } from '../metrics/issuer.ts';
import { dbSpan } from '../telemetry/tracing.ts';
import type { Db } from '../store/db.ts';
import { heldRows, insertIssued, type IssueResultRow } from '../store/ledger.ts';
import type { OwedAnnouncement } from '../store/issued-outbox.ts';
import type { CouponScripts } from '../store/scripts.ts';
import { issuerClaim, issuerMarkIssued } from './issuer-scripts.ts';
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
  /** Given the rows each batch inserted, after the ledger commit, to publish their CouponIssued (issuer/announce.ts). */
  announce?: (rows: readonly OwedAnnouncement[]) => void;
  /** FAILPOINT (testing only): crash-after-ledger-write kills the process after a commit that inserted rows, before they are announced. */
  failpoint?: string | undefined;
}
export interface IssueStats { batches: number; inserts: number; rowsInserted: number; stale: number }

type IssueRecord = ConsumedRecord<CouponIssueRequested>;
type IssueRejection = Rejection<CouponIssueRequested>;
/** A claimed record to write: `unarmed` when Redis had no gate to judge it, and its requested_at. */
export interface ClaimedWrite { record: IssueRecord; unarmed: boolean; requestedAt: Date }

/** No coupon holds more (coupons_total_quantity_range); far below Number.MAX_SAFE_INTEGER. */
const MAX_SEQ = 10_000_000n;

export function issueBatch(deps: IssueBatchDeps): BatchHandler<CouponIssueRequested> {
  return timedIssueBatch(async (records) => {
    const { valid, rejected } = validate(records);
    const claimed = await claim(deps, valid);
    rejected.push(...claimed.rejected);
    if (claimed.writes.length === 0) {
      countStale(deps, claimed.stale);
      return { rejected };
    }
    const rows = await write(deps, claimed.writes);
    announce(deps, rows);
    const sorted = classify(claimed.writes, rows, rejected);
    countStale(deps, claimed.stale + sorted.released);
    issuerRows.inc(sorted.inserted);
    const held = [...sorted.held, ...(await recheck(deps.db, sorted.unresolved))];
    rejected.push(...sorted.rejected, ...seqTaken(sorted.unresolved, held));
    deps.onCoupons?.(new Set(held.map((r) => r.coupon_id)));
    await mark(deps, held);
    return { rejected };
  });
}

/**
 * Step 1: a record no gate could have written (a bad id, a seq below 1, or beyond every coupon's
 * total) is poison on its own; it must not fail the batch it came with. The valid ones get their
 * coupon id in canonical (lower-case) form.
 */
export function validate(records: readonly IssueRecord[]): { valid: IssueRecord[]; rejected: IssueRejection[] } {
  const rejected: IssueRejection[] = [];
  const valid = records.filter((record) => {
    const e = record.value;
    const problem = !isUuid(e.couponId) ? 'coupon_id is not a UUID' : idProblem(e.userId) ? `user_id ${idProblem(e.userId)}` : e.seq < 1n ? `seq ${e.seq} is not positive` : undefined;
    if (problem) rejected.push({ record, reason: 'INVALID_EVENT', error: problem });
    // Beyond every coupon's total, and beyond what a JS number holds exactly: judged here, before
    // Number(seq) could round it into something else.
    else if (e.seq > MAX_SEQ) rejected.push({ record, reason: 'UNKNOWN_COUPON_OR_SEQ', error: `seq ${e.seq} is outside 1..total of any coupon` });
    // A producer older than canonical ids may have sent another spelling of the coupon's UUID:
    // the gate's keys and the ledger know the coupon by its lower-case form only.
    else e.couponId = e.couponId.toLowerCase();
    return !problem && e.seq <= MAX_SEQ;
  });
  return { valid, rejected };
}

/**
 * Step 2: asks the gate about every record (issuer-claim.lua). Every record is judged on its own: a
 * user's stale record (its reservation was released after a publish that "failed" but landed) may
 * sit in the same batch as the same user's live one, and only the live one may be issued. So only
 * exact duplicates (same coupon, user, seq and requested_at: redeliveries, republished
 * reservations) are merged. `stale` counts the records dropped here (released or lost).
 */
async function claim(deps: IssueBatchDeps, valid: readonly IssueRecord[]): Promise<{ writes: ClaimedWrite[]; rejected: IssueRejection[]; stale: number }> {
  const rejected: IssueRejection[] = [];
  const toWrite: { record: IssueRecord; unarmed: boolean }[] = [];
  const confirms: Promise<void>[] = [];
  for (const [couponId, list] of Map.groupBy(valid, (r) => r.value.couponId)) {
    // Taken before the claim is sent: the wait goes to the node that ran it, and is refused if
    // the slot moved meanwhile (store/replica-acks.ts).
    const meta = couponKeys(couponId).meta;
    const node = deps.acks?.nodeOf(meta);
    const verdicts = await issuerClaim(deps.scripts, couponId, list.map((r) => ({ userId: r.value.userId, seq: Number(r.value.seq) })));
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
        rejected.push({ record, reason: 'UNKNOWN_COUPON_OR_SEQ', error: `seq ${record.value.seq} is outside 1..total of coupon ${couponId}` });
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
  const requestedAt = (r: IssueRecord) => (r.value.requestedAt ? timestampDate(r.value.requestedAt) : new Date());
  const unique = new Map<string, ClaimedWrite>();
  for (const w of toWrite) {
    const at = requestedAt(w.record);
    unique.set(recordKey(w.record.value.couponId, w.record.value.userId, Number(w.record.value.seq), at.getTime()), { ...w, requestedAt: at });
  }
  return { writes: [...unique.values()], rejected, stale: valid.length - toWrite.length - rejected.length };
}

/** Step 3: one statement writes the batch (store/ledger.ts insertIssued). */
async function write(deps: IssueBatchDeps, writes: readonly ClaimedWrite[]): Promise<IssueResultRow[]> {
  const rows = await dbSpan('INSERT', 'user_coupons', () => insertIssued(deps.db, writes.map((w) => ({
    couponId: w.record.value.couponId, userId: w.record.value.userId, seq: w.record.value.seq, requestedAt: w.requestedAt, unarmed: w.unarmed,
    replayed: w.record.message.headers?.[REPLAYED_HEADER] !== undefined,
  }))));
  if (deps.stats) { deps.stats.batches++; deps.stats.inserts++; deps.stats.rowsInserted += rows.filter((r) => r.inserted).length; }
  return rows;
}

/**
 * Step 4: the rows this batch inserted (and only those: a row the ledger already held was announced
 * when it was inserted) go to the announcer. It publishes them after this point; the statement
 * that inserted them also wrote what they are owed (coupon_issued_outbox), so a crash from here on
 * loses no announcement, and the batch need not wait for Kafka.
 */
function announce(deps: IssueBatchDeps, rows: readonly IssueResultRow[]): void {
  const owed = owedBy(rows);
  if (owed.length === 0) return;
  if (deps.failpoint === 'crash-after-ledger-write') process.kill(process.pid, 'SIGKILL');
  deps.announce?.(owed);
}

/** The announcements a batch's ledger answer owes: one per row inserted now, none for a row held before. */
export function owedBy(rows: readonly IssueResultRow[]): OwedAnnouncement[] {
  return rows.filter((r) => r.inserted === true).map((r) => ({ coupon_id: r.coupon_id, user_id: r.user_id, seq: r.seq, issued_at: r.issued_at! }));
}

/** What the ledger did with a batch's writes. */
export interface Classified {
  /** Rows the ledger holds for the batch's users (written now or before): marked issued in Redis. */
  held: IssueResultRow[];
  /** Writes for an unknown coupon or a seq outside 1..total: dead-lettered. */
  rejected: IssueRejection[];
  /** Writes neither held nor refused: their seq looks taken by another user (see recheck). */
  unresolved: ClaimedWrite[];
  /** Records of released reservations the ledger dropped (gate_releases). */
  released: number;
  /** Rows written now. */
  inserted: number;
}

/**
 * Step 5: sorts the ledger's answer (store/ledger.ts IssueResultRow) into rows held, records
 * refused, and records left unresolved. A user is resolved by any row the ledger holds for them,
 * or by a refusal of theirs earlier in the batch (`rejectedBefore`).
 */
export function classify(writes: readonly ClaimedWrite[], rows: readonly IssueResultRow[], rejectedBefore: readonly IssueRejection[]): Classified {
  const released = new Set(rows.filter((r) => r.released).map((r) => recordKey(r.coupon_id, r.user_id, Number(r.seq), r.requested_at!.getTime())));
  const held = rows.filter((r) => r.inserted !== null);
  const rejected: IssueRejection[] = [];
  for (const r of rows.filter((row) => row.inserted === null && !row.released)) {
    const w = writes.find((x) => x.record.value.couponId === r.coupon_id && x.record.value.userId === r.user_id);
    if (w) rejected.push({ record: w.record, reason: 'UNKNOWN_COUPON_OR_SEQ', error: `coupon ${r.coupon_id} does not exist or seq ${r.seq} is outside 1..total` });
  }
  // A record that is neither written nor already held lost a (coupon_id, seq) conflict: its seq
  // belongs to another user. Only possible after Redis lost gate state; a person must look.
  const heldKeys = new Set(held.map((r) => userKey(r.coupon_id, r.user_id)));
  const rejectedKeys = new Set([...rejectedBefore, ...rejected].map((r) => userKey(r.record.value.couponId, r.record.value.userId)));
  const unresolved = writes.filter(({ record: w, requestedAt: at }) => {
    if (released.has(recordKey(w.value.couponId, w.value.userId, Number(w.value.seq), at.getTime()))) return false;
    const key = userKey(w.value.couponId, w.value.userId);
    return !heldKeys.has(key) && !rejectedKeys.has(key);
  });
  return { held, rejected, unresolved, released: released.size, inserted: rows.filter((r) => r.inserted).length };
}

/**
 * The statement's snapshot cannot see a row another issuer committed while it ran (a batch
 * redelivered to a new group member during a rebalance), yet ON CONFLICT skipped it. Ask again
 * with a fresh snapshot before calling the seq taken.
 */
async function recheck(db: Db, unresolved: readonly ClaimedWrite[]): Promise<IssueResultRow[]> {
  if (unresolved.length === 0) return [];
  return heldRows(db, unresolved.map(({ record: w }) => [w.value.couponId, w.value.userId] as const));
}

/** The unresolved writes whose user the ledger still holds no row for: SEQ_TAKEN, for a person to look at. */
export function seqTaken(unresolved: readonly ClaimedWrite[], held: readonly IssueResultRow[]): IssueRejection[] {
  const heldKeys = new Set(held.map((r) => userKey(r.coupon_id, r.user_id)));
  return unresolved.filter(({ record: w }) => !heldKeys.has(userKey(w.value.couponId, w.value.userId)))
    .map(({ record: w }) => ({ record: w, reason: 'SEQ_TAKEN', error: `seq ${w.value.seq} of coupon ${w.value.couponId} is held by another user` }));
}

/** Step 6: marks the rows the ledger holds issued in Redis, a coupon at a time. */
async function mark(deps: IssueBatchDeps, held: readonly IssueResultRow[]): Promise<void> {
  for (const [couponId, list] of Map.groupBy(held, (r) => r.coupon_id)) {
    await issuerMarkIssued(deps.scripts, couponId, list.map((r) => ({ userId: r.user_id, seq: Number(r.seq), issuedAtMs: r.issued_at!.getTime() })));
  }
}

const userKey = (couponId: string, userId: string) => `${couponId}\u0000${userId}`;
const recordKey = (couponId: string, userId: string, seq: number, requestedAtMs: number) => `${couponId}\u0000${userId}\u0000${seq}\u0000${requestedAtMs}`;

function countStale(deps: IssueBatchDeps, stale: number): void {
  if (deps.stats) deps.stats.stale += stale;
  if (stale > 0) deps.log.info({ stale }, 'dropped records whose reservation was released');
}
