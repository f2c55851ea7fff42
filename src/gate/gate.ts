// The first-come gate (design: invariants I1–I4). One Lua script decides each IssueCoupon
// atomically; the accepted request is published to coupon.v1.issue and the caller hears OK only
// after the broker acknowledged it. A failed publish releases the slot. A crash between reserve and
// publish leaves the user in the pending journal, which the recovery loop republishes
// (gate/recovery.ts). A coupon whose gate state Redis lost is rebuilt first (gate/rebuild.ts).
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { Redis } from '../store/redis.ts';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { couponNotFound, type UserCouponStateName } from '../catalog/catalog.ts';
import { DomainError, refusal } from '../domain/errors.ts';
import type { Logger } from '../log.ts';
import type { BatchingPublisher } from '../events/publisher.ts';
import { countGateDecision, countGateRefusal } from '../metrics/gate.ts';
import { couponKeys } from '../store/keys.ts';
import { SETTLE_MARGIN_MS } from '../store/loss-guard.ts';
import { CHUNK, RedisCallUnsettled, type CouponScripts } from '../store/scripts.ts';
import { isOutage } from '../domain/outage.ts';
import { gateConfirmMany, gateRelease, gateReserve, type StaleReservation } from './gate-scripts.ts';
import type { GateRelease } from '../store/gate-releases.ts';
import type { ReplicaAcks } from '../store/replica-acks.ts';
import type { GateRebuilder } from './rebuild.ts';
import type { SoldOutViews } from './sold-out-view.ts';

/** Encodes CouponIssueRequested in the registry's wire format. */
export interface IssueEncoder { encode(message: ReturnType<typeof create<typeof CouponIssueRequestedSchema>>): Buffer }

export interface GateDeps {
  redis: Redis;
  scripts: CouponScripts;
  publisher: BatchingPublisher;
  encoder: IssueEncoder;
  /** The issue topic (coupon.v1.issue under KAFKA_TOPIC_PREFIX). */
  topic: string;
  rebuilder: GateRebuilder;
  /**
   * Keeps a release in the ledger (gate_releases), where it outlives a Redis loss: the issuer then
   * drops the released record even without the Redis tombstone. Best effort.
   */
  recordRelease?: (release: GateRelease) => Promise<void>;
  log: Logger;
  now?: () => number;
  /**
   * REDIS_WAIT_REPLICAS: a reservation is answered OK only once this many Redis replicas hold it,
   * so a failover cannot lose it (store/replica-acks.ts). Absent or 0: no wait.
   */
  acks?: ReplicaAcks | undefined;
  /** PUBLISH_TIMEOUT_MS: bounds how long a repeat waits for the first request's publish. */
  publishTimeoutMs: number;
  /** The in-process sold-out view (gate/sold-out-view.ts); absent: every call goes to Redis. */
  soldOut?: SoldOutViews | undefined;
  /**
   * RECOVERY_STALE_MS: from this age on, the recovery loop may republish and confirm a reservation
   * (gate/recovery.ts), so a release of a failed publish is repeated only while it is younger
   * (less SETTLE_MARGIN_MS). Default 30 s.
   */
  recoveryStaleMs?: number;
  /**
   * Testing only: "crash-after-reserve" kills the process between reserve and publish;
   * "stall-after-reserve" pauses there for PUBLISH_TIMEOUT_MS + 0.5 s; "lose-release-reply" does
   * that, and loses the reply of the release that follows (it ran in Redis).
   */
  failpoint?: string | undefined;
}

/**
 * Publishes one reservation as CouponIssueRequested; shared by the gate and its recovery loop.
 * `readAtMs` (Date.now() clock) is a moment before the reservation was read from Redis (made, for
 * the gate): the publish bound counts from it, so a record never reaches Kafka later than
 * PUBLISH_TIMEOUT_MS after a moment when Redis still held its reservation, which is before any
 * loss of it was noticed (store/loss-guard.ts), however long the caller paused in between.
 */
export async function publishReservation(d: Pick<GateDeps, 'encoder' | 'publisher' | 'topic'>, couponId: string, userId: string, seq: number, requestedAtMs: number, total: number, readAtMs: number): Promise<void> {
  const value = d.encoder.encode(create(CouponIssueRequestedSchema, {
    couponId, userId, seq: BigInt(seq), requestedAt: timestampFromDate(new Date(requestedAtMs)), totalQuantity: BigInt(total),
  }));
  await d.publisher.send(d.topic, { key: couponId, value }, readAtMs);
}

/**
 * The reservation stands in Redis and its record went to Kafka, but no replica confirmed it: a
 * failover could still lose it, so it is not answered OK. Nothing is released (the issuer may take
 * the record already); a retry answers with what survived: OK with the same seq once a replica
 * holds it, or a fresh decision if the failover lost it.
 */
const unreplicated = (couponId: string, cause: unknown) => new DomainError('BACKEND_UNAVAILABLE', 'the request was recorded, but no Redis replica confirmed it yet; retry to learn its outcome', { coupon_id: couponId }, cause);

/** How long a caller waits for the release of a failed publish before hearing UNAVAILABLE (the release goes on). */
const RELEASE_ANSWER_MS = 1_000;

const released = (couponId: string, cause?: unknown) => new DomainError('PUBLISH_FAILED', 'could not record the request; the slot was released, retry', { coupon_id: couponId }, cause);

/**
 * The refusals a sale gives by the thousand, one object per coupon and reason: the layers above map
 * an error to its answer once per object (server/interceptors.ts, server/short-path.ts), so a
 * sold-out coupon's refusals reuse one answer's bytes. At most REFUSALS_KEPT coupons' are kept.
 */
const REFUSALS_KEPT = 1_000;
const refusals = new Map<string, DomainError>();
function sharedRefusal(reason: 'COUPON_SOLD_OUT' | 'COUPON_CLOSED', message: string, couponId: string): DomainError {
  const key = `${reason}\u0000${couponId}`;
  let err = refusals.get(key);
  if (!err) {
    if (refusals.size >= REFUSALS_KEPT) refusals.delete(refusals.keys().next().value!);
    err = refusal(reason, message, { coupon_id: couponId });
    refusals.set(key, err);
  }
  return err;
}
const soldOut = (couponId: string) => sharedRefusal('COUPON_SOLD_OUT', 'the coupon is sold out', couponId);
const closed = (couponId: string) => sharedRefusal('COUPON_CLOSED', 'the coupon is closed', couponId);

type Settled = { ok: true } | { ok: false; err: DomainError };

/**
 * Confirms reservations (gate-confirm.lua) a coupon's at a time: the confirms asked for in one turn
 * of the event loop (a publisher batch's acknowledgement settles all its records at once) go to
 * Redis as one script call, not one per winner. Each reservation is still confirmed on its own
 * terms inside the script; a call that fails fails every confirm it carried, as their own calls would.
 */
class Confirms {
  private readonly scripts: CouponScripts;
  private queued = new Map<string, { reservation: StaleReservation; settle: { resolve: () => void; reject: (err: unknown) => void } }[]>();
  private scheduled = false;

  constructor(scripts: CouponScripts) {
    this.scripts = scripts;
  }

  confirm(couponId: string, reservation: StaleReservation): Promise<void> {
    return new Promise((resolve, reject) => {
      let list = this.queued.get(couponId);
      if (!list) { list = []; this.queued.set(couponId, list); }
      list.push({ reservation, settle: { resolve, reject } });
      if (!this.scheduled) {
        this.scheduled = true;
        // After the promise callbacks of this turn: every confirm they ask for joins this call.
        process.nextTick(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const queued = this.queued;
    this.queued = new Map();
    for (const [couponId, list] of queued) {
      for (let i = 0; i < list.length; i += CHUNK) {
        const part = list.slice(i, i + CHUNK);
        gateConfirmMany(this.scripts, couponId, part.map((q) => q.reservation)).then(
          () => { for (const q of part) q.settle.resolve(); },
          (err: unknown) => { for (const q of part) q.settle.reject(err); },
        );
      }
    }
  }
}

export class Gate {
  private readonly d: GateDeps;
  private readonly now: () => number;
  /** Publishes in flight in this process, by coupon and user: true once acknowledged. */
  private readonly inFlight = new Map<string, Promise<boolean>>();
  /** Releases of failed publishes still repeated in the background (release). */
  private readonly releasing = new Set<Promise<void>>();
  private readonly confirms: Confirms;

  constructor(deps: GateDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
    this.confirms = new Confirms(deps.scripts);
  }

  /**
   * The coupon's gate in Redis, rebuilt first if Redis lost it, as IssueCoupon would (UNAVAILABLE
   * while the rebuild waits for records in flight): before an operator's change
   * (catalog/changes.ts), and before a read would answer "never won" (catalog/user-coupons.ts).
   * 'RETIRED' for a coupon past its retention, 'UNKNOWN' for no such coupon: neither is armed.
   */
  async ensureArmed(couponId: string): Promise<'ARMED' | 'RETIRED' | 'UNKNOWN'> {
    if ((await this.d.redis.exists(couponKeys(couponId).meta)) === 1) return 'ARMED';
    const rebuilt = await this.d.rebuilder.arm(couponId, '');
    if (rebuilt === 'ARMED') return 'ARMED';
    return rebuilt.status === 'NOT_FOUND' ? 'UNKNOWN' : 'RETIRED';
  }

  /**
   * Waits, up to `timeoutMs`, for the releases still being repeated in the background (release):
   * a routine shutdown while Redis does not answer should not leave a release that ran unrecorded.
   */
  async drainReleases(timeoutMs: number): Promise<void> {
    if (this.releasing.size === 0) return;
    this.d.log.warn({ releases: this.releasing.size }, 'waiting for releases of failed publishes that Redis has not answered yet');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.releasing), new Promise((r) => { timer = setTimeout(r, timeoutMs); })]).finally(() => clearTimeout(timer));
  }

  /** IssueCoupon: wins one slot for the user or says why not. */
  async issue(couponId: string, userId: string): Promise<{ seq: number; state: UserCouponStateName }> {
    // A repeat that finds the user's first request still publishing must not answer OK before
    // that publish is acknowledged: if it fails, the slot is released. Wait for the outcome, and
    // if the slot was released, try once more like a fresh request.
    for (let attempt = 0; ; attempt++) {
      const outcome = await this.issueOnce(couponId, userId);
      if (outcome !== 'RELEASED_WHILE_WAITING') return outcome;
      if (attempt >= 1) throw released(couponId);
    }
  }

  private async issueOnce(couponId: string, userId: string): Promise<{ seq: number; state: UserCouponStateName } | 'RELEASED_WHILE_WAITING'> {
    let nowMs = this.now();
    let local = this.d.soldOut?.answer(couponId, userId, nowMs);
    if (local instanceof Promise) local = await local;
    if (local === 'SOLD_OUT') throw soldOut(couponId);
    if (local === 'CLOSED') throw closed(couponId);
    const metaKey = couponKeys(couponId).meta;
    // The node the reservation is sent to, taken before sending it: the replicas' wait goes to it,
    // and is refused if the slot has moved by the time the script answers (store/replica-acks.ts).
    let node = this.d.acks?.nodeOf(metaKey);
    // The publish bound counts from here: just before the reservation is made (publishReservation).
    let reservingAt = Date.now();
    let result = await gateReserve(this.d.scripts, couponId, userId, nowMs);
    if (result.status === 'NOT_FOUND') {
      // No gate in Redis: rebuilt from the ledger, or, for an unknown or finished coupon, answered without one.
      const rebuilt = await this.d.rebuilder.arm(couponId, userId);
      if (rebuilt === 'ARMED') node = this.d.acks?.nodeOf(metaKey);
      // The reservation is made now, after the rebuild: its time (the record's requested_at) too.
      nowMs = this.now();
      reservingAt = Date.now();
      result = rebuilt === 'ARMED' ? await gateReserve(this.d.scripts, couponId, userId, nowMs) : rebuilt;
    }
    countGateRefusal(result.status);
    switch (result.status) {
      case 'NOT_FOUND': throw couponNotFound(couponId);
      case 'NOT_OPEN': throw refusal('COUPON_NOT_OPEN', 'the coupon is not open yet', { coupon_id: couponId });
      case 'CLOSED': throw closed(couponId);
      case 'PAUSED': throw refusal('COUPON_PAUSED', 'the coupon is paused by an operator; retry once it is resumed', { coupon_id: couponId });
      // This call's time is before the rebuilt gate's reservation floor (gate-load.lua): nothing reserved.
      case 'CLOCK_BEHIND': throw new DomainError('BACKEND_UNAVAILABLE', 'the request began before the coupon\'s state was rebuilt; retry', { coupon_id: couponId });
      case 'SOLD_OUT':
        this.d.soldOut?.soldOut(couponId);
        throw soldOut(couponId);
      case 'EXISTING': {
        if (result.unacked && !(await this.acknowledged(couponId, userId, result.seq))) return 'RELEASED_WHILE_WAITING';
        // A repeat is an OK as well: the state it reports must survive a failover too. WAIT counts
        // this connection's writes, which include the reservation if this process made it.
        const notReplicated = await this.replicated(couponId, node);
        if (notReplicated) { countGateDecision('unreplicated'); throw unreplicated(couponId, notReplicated); }
        countGateDecision('repeat');
        return { seq: result.seq, state: result.state };
      }
      case 'RESERVED': break;
    }
    const seq = result.seq;
    if (this.d.failpoint === 'crash-after-reserve') process.kill(process.pid, 'SIGKILL');
    // A pause between the reservation and its publish (a GC pause, a blocked event loop).
    if (this.d.failpoint === 'stall-after-reserve' || this.d.failpoint === 'lose-release-reply') await new Promise((r) => setTimeout(r, this.d.publishTimeoutMs + 500));
    const key = `${couponId}\u0000${userId}`;
    const settled = this.publishOrRelease(couponId, userId, seq, nowMs, result.total, reservingAt);
    this.inFlight.set(key, settled.then((r) => r.ok, () => false));
    try {
      // The replicas' acknowledgement overlaps the publish: it costs no extra latency.
      const [r, notReplicated] = await Promise.all([settled, this.replicated(couponId, node)]);
      if (!r.ok) { countGateDecision('publish_failed'); throw r.err; }
      if (notReplicated) { countGateDecision('unreplicated'); throw unreplicated(couponId, notReplicated); }
      countGateDecision('won');
      return { seq, state: 'PENDING' };
    } finally {
      this.inFlight.delete(key);
    }
  }

  /**
   * Undefined once REDIS_WAIT_REPLICAS replicas hold every write so far of `node` (the coupon's
   * master when the script was sent, still its master when it answered), else why not.
   */
  private async replicated(couponId: string, node: ReturnType<ReplicaAcks['nodeOf']>): Promise<Error | undefined> {
    if (!this.d.acks?.enabled) return undefined;
    try {
      await this.d.acks.confirm(couponKeys(couponId).meta, node);
      return undefined;
    } catch (err) {
      this.d.log.warn({ couponId, err: (err as Error).message }, 'Redis replicas did not confirm the gate state; not answering OK');
      return err as Error;
    }
  }

  /**
   * Publishes the reservation; if that fails, gives the slot back. PUBLISH_FAILED promises "the
   * slot was released, a retry is safe", so it is answered only when the release happened.
   */
  private async publishOrRelease(couponId: string, userId: string, seq: number, nowMs: number, total: number, reservingAt: number): Promise<Settled> {
    try {
      await publishReservation(this.d, couponId, userId, seq, nowMs, total, reservingAt);
    } catch (err) {
      return await this.release(couponId, userId, seq, nowMs, err as Error);
    }
    await this.confirms.confirm(couponId, { userId, reservedAtMs: nowMs, seq });
    return { ok: true };
  }

  /**
   * Gives the slot of a failed publish back (gate-release.lua) and says what the caller hears.
   * A release whose reply is lost (an outage: a command timeout, a dropped connection) may still
   * have run in Redis, freeing the seq for another user while this reservation's record may still
   * land: its outcome must reach the ledger (gate_releases) all the same, or a second loss of the
   * gate could let that record take the seq from the user who won it next. So the release is
   * repeated until Redis answers (a repeat of one that ran answers STALE: the user no longer holds
   * the seq), in the background once the caller has heard UNAVAILABLE, and its outcome recorded.
   */
  private async release(couponId: string, userId: string, seq: number, nowMs: number, publishErr: Error): Promise<Settled> {
    const settled = this.releaseUntilAnswered(couponId, userId, seq, nowMs).then((outcome) => this.releaseSettled(couponId, userId, seq, nowMs, outcome, publishErr));
    let timer: NodeJS.Timeout | undefined;
    const answerBy = new Promise<'PENDING'>((resolve) => { timer = setTimeout(() => resolve('PENDING'), RELEASE_ANSWER_MS); });
    const first = await Promise.race([settled, answerBy]).finally(() => clearTimeout(timer));
    if (first !== 'PENDING') return first;
    const background = settled.then(() => undefined, (err: unknown) => this.d.log.error({ couponId, userId, seq, err: (err as Error).message }, 'could not settle the release of a failed publish'));
    this.releasing.add(background);
    void background.finally(() => this.releasing.delete(background));
    return { ok: false, err: new DomainError('BACKEND_UNAVAILABLE', 'the request could not be confirmed, and Redis did not answer whether its slot was given back; retry', { coupon_id: couponId }, publishErr) };
  }

  private async releaseUntilAnswered(couponId: string, userId: string, seq: number, nowMs: number): Promise<'RELEASED' | 'CLAIMED' | 'STALE' | 'UNANSWERED'> {
    // Past this age the recovery loop may have republished and confirmed the reservation, and a
    // repeat told its user OK: a STALE answer then no longer means "nobody was told OK".
    const repeatUntil = nowMs + (this.d.recoveryStaleMs ?? 30_000) - SETTLE_MARGIN_MS;
    for (let attempt = 1, delayMs = 100; ; attempt++, delayMs = Math.min(delayMs * 2, 2_000)) {
      try {
        const outcome = await gateRelease(this.d.scripts, couponId, userId, seq, nowMs);
        if (this.d.failpoint === 'lose-release-reply' && attempt === 1) throw new RedisCallUnsettled('failpoint lose-release-reply: the release ran, its reply is lost');
        return outcome;
      } catch (err) {
        if (!isOutage(err)) throw err;
        if (this.now() + delayMs >= repeatUntil) {
          this.d.log.error({ couponId, userId, seq, attempt, err: (err as Error).message }, 'the release of a failed publish never got an answer from Redis; if it ran, nothing records it outside Redis');
          return 'UNANSWERED';
        }
        if (attempt === 1 || attempt % 10 === 0) this.d.log.warn({ couponId, userId, seq, attempt, err: (err as Error).message }, 'the release of a failed publish got no answer from Redis; repeating it until it does');
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }

  private async releaseSettled(couponId: string, userId: string, seq: number, nowMs: number, outcome: 'RELEASED' | 'CLAIMED' | 'STALE' | 'UNANSWERED', err: Error): Promise<Settled> {
    if (outcome === 'UNANSWERED') return { ok: false, err: new DomainError('BACKEND_UNAVAILABLE', 'the request could not be confirmed, and Redis did not answer whether its slot was given back; retry', { coupon_id: couponId }, err) };
    // The issuer already took the record: the coupon is coming, so the honest answer is OK.
    if (outcome === 'CLAIMED') return { ok: true };
    if (outcome === 'RELEASED') {
      this.d.log.warn({ couponId, userId, seq, err: err.message }, 'publish failed; slot released');
      // The same reservation time the record carries (requested_at): it tells this reservation's
      // record from a later one of the same user with the same seq.
      await this.d.recordRelease?.({ couponId, userId, seq, requestedAtMs: nowMs }).catch((e: unknown) => {
        this.d.log.error({ couponId, userId, seq, err: (e as Error).message }, 'could not record the release in the ledger; only the Redis tombstone protects it, while Redis keeps it');
      });
      return { ok: false, err: released(couponId, err) };
    }
    // STALE: the user no longer holds this seq here (Redis lost the gate meanwhile, or an earlier
    // attempt of this release ran and its reply was lost). Nothing was released now, and the record
    // may still land. Its release is recorded in the ledger all the same: the caller is told nothing
    // was confirmed, so if the record lands while the gate is gone the issuer drops it (an exact
    // match on requested_at, so never a later reservation's record) instead of writing a row that a
    // rebuild already under way may miss, or that takes a seq handed to someone else.
    this.d.log.warn({ couponId, userId, seq, err: err.message }, 'publish failed and the reservation is gone from Redis; nothing released');
    await this.d.recordRelease?.({ couponId, userId, seq, requestedAtMs: nowMs }).catch((e: unknown) => {
      this.d.log.error({ couponId, userId, seq, err: (e as Error).message }, 'could not record the failed publish in the ledger');
    });
    return { ok: false, err: new DomainError('BACKEND_UNAVAILABLE', 'the request could not be confirmed while the gate state is being recovered; retry shortly', { coupon_id: couponId }, err) };
  }

  /**
   * Waits until the publish of (user, seq) is acknowledged (true) or released (false). Requests in
   * this process share the in-flight promise; others poll Redis. A reservation stuck by a crash
   * stays pending until recovery, so the wait is bounded and then answers UNAVAILABLE.
   */
  private async acknowledged(couponId: string, userId: string, seq: number): Promise<boolean> {
    const local = this.inFlight.get(`${couponId}\u0000${userId}`);
    const stillRecording = () => new DomainError('BACKEND_UNAVAILABLE', 'your earlier request for this coupon is still being recorded; retry', { coupon_id: couponId });
    if (local) {
      // Bounded like the poll below: the first request's publish ends by its deadline, but a Redis
      // call after it (confirm, release) may be slow to settle; this caller hears UNAVAILABLE meanwhile.
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(stillRecording()), this.d.publishTimeoutMs + 1_000); });
      return Promise.race([local, bound]).finally(() => clearTimeout(timer));
    }
    const k = couponKeys(couponId);
    const deadline = this.now() + this.d.publishTimeoutMs + 1_000;
    while (this.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
      const [[, pending], [, held]] = (await this.d.redis.pipeline().zscore(k.pending, userId).hget(k.winners, userId).exec()) as [[unknown, string | null], [unknown, string | null]];
      if (held !== String(seq)) return false;
      if (pending === null) return true;
    }
    // Not released: the reservation stands and recovery will publish it.
    throw stillRecording();
  }
}
