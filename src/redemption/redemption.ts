// Redemption for the payment service (docs/design.md#i5-redemption-at-most-once): redeem once, compensate exactly once.
//
// One Lua script decides each RedeemCoupon or CancelRedemption atomically and, in the same step,
// journals the change in the coupon's outbox. The change is then published to
// coupon.v1.redemption, and the caller hears OK only after the broker acknowledged it; the journal
// entry is dropped on the ack. If the publish fails, the change stays in Redis *and* in the outbox:
// - the caller gets UNAVAILABLE (PUBLISH_FAILED) and may retry with the same order id, which finds
//   the journaled change and publishes it before answering OK (or compensate with a cancel);
// - otherwise the recovery loop republishes entries older than RECOVERY_STALE_MS.
// So Redis and the event stream never disagree silently. Duplicates on the topic are harmless:
// every event carries the (coupon, user) version, and the ledger ignores versions it already has.
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { Redis } from '../store/redis.ts';
import { CouponRedemptionChangedSchema, RedemptionTransition, type CouponRedemptionChanged } from '../../gen/coupon/events/v1/redemption_pb.js';
import { DomainError, LoadInterrupted } from '../domain/errors.ts';
import { PublishError, type BatchingPublisher } from '../events/publisher.ts';
import type { Logger } from '../log.ts';
import { isUuid } from '../domain/ids.ts';
import type { UserCouponView } from '../catalog/user-coupons.ts';
import type { ActiveCoupons } from '../store/active-coupons.ts';
import { findCoupon } from '../store/coupons.ts';
import type { Db } from '../store/db.ts';
import { couponKeys, parseRedemptionValue, type RedemptionValue } from '../store/keys.ts';

export { parseRedemptionValue, type RedemptionValue };
import type { CouponScripts } from '../store/scripts.ts';
import { deadlineWithoutGate, retentionDeadline } from '../domain/retention.ts';
import { cancelRedemption, redeem, redemptionLoad, restoreRedemption, type RedemptionOutcome, type WithoutGate } from './redemption-scripts.ts';
import { couponRedemptions, userRedemption } from './ledger.ts';
import type { LossGuard } from '../store/loss-guard.ts';
import type { ReplicaAcks } from '../store/replica-acks.ts';

/** Encodes CouponRedemptionChanged in the registry's wire format. */
export interface RedemptionEncoder { encode(message: CouponRedemptionChanged): Buffer }

export interface RedemptionDeps {
  db: Db;
  redis: Redis;
  scripts: CouponScripts;
  publisher: BatchingPublisher;
  encoder: RedemptionEncoder;
  /** The redemption topic (coupon.v1.redemption under KAFKA_TOPIC_PREFIX). */
  topic: string;
  /** The coupons that may hold outbox entries, which the recovery loop walks (store/active-coupons.ts). */
  active: ActiveCoupons;
  log: Logger;
  now?: () => number;
  /**
   * Says when the ledger can be trusted for this coupon: no redemption change from before the loss
   * can still land, the ledger consumer has applied what did, and no dead letter still owns a
   * change (store/loss-guard.ts). Loading older state could let a second order redeem the coupon.
   */
  guard: LossGuard;
  /**
   * REDIS_WAIT_REPLICAS: a change is answered OK only once this many Redis replicas hold it, so a
   * failover cannot undo a redemption its caller heard about (store/replica-acks.ts).
   */
  acks?: ReplicaAcks | undefined;
}


/** An outbox member, "<user>\n<redemption value>": one journaled change of one user's coupon. */
export function parseOutboxEntry(member: string): { userId: string; change: RedemptionValue } | undefined {
  const newline = member.indexOf('\n');
  const change = newline < 0 ? undefined : parseRedemptionValue(member.slice(newline + 1));
  return change && { userId: member.slice(0, newline), change };
}

export function redemptionEvent(couponId: string, userId: string, change: RedemptionValue): CouponRedemptionChanged {
  return create(CouponRedemptionChangedSchema, {
    couponId,
    userId,
    orderId: change.orderId,
    transition: change.state === 'R' ? RedemptionTransition.REDEEMED : RedemptionTransition.CANCELLED,
    occurredAt: timestampFromDate(new Date(change.atMs)),
    version: BigInt(change.version),
  });
}

function viewOf(couponId: string, userId: string, o: RedemptionOutcome<string>): UserCouponView {
  const value = parseRedemptionValue(o.value);
  const redeemed = value?.state === 'R';
  const issuedAt = o.issuedMs ? new Date(Number(o.issuedMs)) : null;
  return {
    couponId, userId,
    seq: Number(o.seq || 0),
    state: redeemed ? 'REDEEMED' : issuedAt ? 'ISSUED' : o.seq ? 'PENDING' : 'NOT_REQUESTED',
    issuedAt,
    orderId: redeemed ? value.orderId : '',
    redeemedAt: redeemed ? new Date(value.atMs) : null,
  };
}

/**
 * The call's time (taken before its script, and again after a load it waited for) is before the
 * change floor of the load that put the coupon's state back: this process's clock is behind
 * Redis's by more than SETTLE_MARGIN_MS (store/loss-guard.ts fenceBoundMs).
 */
const clockBehind = (meta: Record<string, string>) =>
  new DomainError('BACKEND_UNAVAILABLE', "the request's time is before the coupon's redemption state was loaded from the ledger; retry", meta);

export type CancelOutcome = 'CANCELLED' | 'RECORDED' | 'UNCHANGED';

export class Redemption {
  private readonly d: RedemptionDeps;
  private readonly now: () => number;
  /** Publishes of outbox entries in flight in this process, so a repeat waits instead of re-sending. */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** One load per coupon at a time in this process, however many requests find it unloaded. */
  private readonly loading = new Map<string, Promise<void>>();

  constructor(deps: RedemptionDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
  }

  /** RedeemCoupon: binds the user's issued coupon to the order, or says why not. */
  async redeem(couponId: string, userId: string, orderId: string): Promise<UserCouponView> {
    const meta = { coupon_id: couponId, user_id: userId, order_id: orderId };
    let withoutGate: WithoutGate | undefined;
    // At most: meta lost → read the coupon; coupon not loaded → load it; user lost → restore; decide.
    for (let attempt = 0; attempt < 5; attempt++) {
      // Taken before the script is sent: the replicas' wait goes to the node that ran it.
      const node = this.d.acks?.nodeOf(couponKeys(couponId).redeem);
      const o = await redeem(this.d.scripts, couponId, userId, orderId, this.now(), withoutGate);
      switch (o.status) {
        case 'NO_META': {
          const row = await this.couponOrThrow(couponId);
          withoutGate = { validUntilMs: row.valid_until?.getTime() ?? 0, deadlineMs: deadlineWithoutGate(row, this.d.scripts.retentionMs, this.now()) };
          continue;
        }
        case 'UNLOADED':
          await this.load(couponId);
          continue;
        case 'MISSING':
          // Pending, never won, or state Redis lost: the ledger decides. An issued coupon is
          // restored, never answered NOT_ISSUED.
          if (await this.restoreUser(couponId, userId, withoutGate?.deadlineMs)) continue;
          throw new DomainError('COUPON_NOT_ISSUED', 'the user holds no issued coupon (never won, or not yet issued)', meta);
        case 'ALREADY_REDEEMED':
          throw new DomainError('COUPON_ALREADY_REDEEMED', 'the coupon is redeemed by another order', meta);
        case 'CANCELLED':
          throw new DomainError('REDEMPTION_CANCELLED', "this order's redemption was cancelled; it cannot redeem again", meta);
        case 'EXPIRED':
          throw new DomainError('COUPON_EXPIRED', 'the coupon is past its valid_until', meta);
        case 'CLOCK_BEHIND':
          throw clockBehind(meta);
        case 'REDEEMED':
        case 'UNCHANGED':
          await this.publishReplicated(couponId, o.outbox, meta, node);
          if (o.status === 'REDEEMED') this.d.log.info(meta, 'coupon redeemed');
          return viewOf(couponId, userId, o);
      }
    }
    throw new DomainError('BACKEND_UNAVAILABLE', 'the redemption state kept changing under this request; retry', meta);
  }

  /** CancelRedemption: the compensation. Idempotent; an OK no-op when the coupon was not redeemed. */
  async cancel(couponId: string, userId: string, orderId: string): Promise<{ view: UserCouponView; outcome: CancelOutcome }> {
    const meta = { coupon_id: couponId, user_id: userId, order_id: orderId };
    let ledgerChecked = false;
    let deadlineMs: number | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      const node = this.d.acks?.nodeOf(couponKeys(couponId).redeem);
      const o = await cancelRedemption(this.d.scripts, couponId, userId, orderId, this.now(), ledgerChecked, deadlineMs);
      switch (o.status) {
        case 'NO_META':
          deadlineMs = deadlineWithoutGate(await this.couponOrThrow(couponId), this.d.scripts.retentionMs, this.now());
          await this.load(couponId);
          await this.restoreUser(couponId, userId, deadlineMs);
          ledgerChecked = true;
          continue;
        case 'UNLOADED':
          // A lost REDEEMED state must be loaded first, or this cancel would be a silent no-op.
          await this.load(couponId);
          continue;
        case 'CLOCK_BEHIND':
          throw clockBehind(meta);
        case 'MISSING':
          await this.restoreUser(couponId, userId, deadlineMs);
          ledgerChecked = true;
          continue;
        case 'ORDER_MISMATCH':
          // The order is remembered as cancelled, which the answer promises ("can no longer redeem
          // it"): published, and held by the replicas, before answering, like any other change.
          await this.publishReplicated(couponId, o.outbox, meta, node);
          throw new DomainError('ORDER_MISMATCH', 'the coupon is redeemed by another order; nothing was given back, and this order can no longer redeem it', meta);
        case 'CANCELLED':
        case 'RECORDED':
        case 'UNCHANGED':
          await this.publishReplicated(couponId, o.outbox, meta, node);
          if (o.status !== 'UNCHANGED') this.d.log.info({ ...meta, outcome: o.status }, 'redemption cancelled');
          return { view: viewOf(couponId, userId, o), outcome: o.status };
      }
    }
    throw new DomainError('BACKEND_UNAVAILABLE', 'the redemption state kept changing under this request; retry', meta);
  }

  /**
   * Republishes journaled changes whose publish never finished (the broker refused, or the process
   * died before the ack). Duplicates are harmless: the ledger ignores versions it already has.
   */
  async recoverStale(staleMs: number): Promise<number> {
    const cutoff = this.now() - staleMs;
    let republished = 0;
    const failures: unknown[] = [];
    // Only coupons that may hold outbox entries, a page at a time with one round trip per page; the
    // gate's recovery pass drops the idle ones from the index (store/active-coupons.ts).
    for await (const page of this.d.active.pages()) {
      const journals = await Promise.all(page.map(({ couponId }) => this.d.redis.zrangebylex(couponKeys(couponId).outbox, '-', '+', 'LIMIT', 0, 1_000)));
      await Promise.all(page.map(async ({ couponId }, i) => {
        const stale = journals[i]!.filter((member) => (parseOutboxEntry(member)?.change.atMs ?? 0) < cutoff);
        if (stale.length === 0) return;
        try {
          await this.publish(couponId, stale);
          republished += stale.length;
        } catch (err) { failures.push(err); }
      }));
    }
    if (republished > 0) this.d.log.warn({ republished }, 'republished redemption changes whose publish had not finished');
    if (failures.length > 0) throw failures[0];
    return republished;
  }

  /**
   * publishJournaled, and, overlapping it, waits for REDIS_WAIT_REPLICAS replicas to hold the
   * change (store/replica-acks.ts). Called right after the script answered, with the node taken
   * before it was sent: the wait goes to the node that ran it, and is refused if the slot moved.
   * Unconfirmed: UNAVAILABLE, and the change stands, journaled, as after a failed publish: a retry
   * with the same order id answers from what survived.
   */
  private async publishReplicated(couponId: string, outbox: string[], meta: Record<string, string>, node: ReturnType<ReplicaAcks['nodeOf']>): Promise<void> {
    const acks = this.d.acks;
    if (!acks?.enabled) return this.publishJournaled(couponId, outbox, meta);
    const key = couponKeys(couponId).redeem;
    const [published, replicated] = await Promise.allSettled([this.publishJournaled(couponId, outbox, meta), acks.confirm(key, node)]);
    if (published.status === 'rejected') throw published.reason;
    if (replicated.status === 'rejected') {
      const err = replicated.reason as Error;
      this.d.log.warn({ ...meta, err: err.message }, 'Redis replicas did not confirm the redemption change; not answering OK');
      throw new DomainError('BACKEND_UNAVAILABLE', 'the change is recorded, but no Redis replica confirmed it yet; retry with the same order_id', meta, err);
    }
  }

  /** Publishes the user's journaled changes (the new one and any left unacknowledged), then answers. */
  private async publishJournaled(couponId: string, outbox: string[], meta: Record<string, string>): Promise<void> {
    try {
      await this.publish(couponId, outbox);
    } catch (err) {
      if (!(err instanceof PublishError)) throw err;
      // The change stands in Redis and stays journaled; a retry with the same order id publishes it.
      throw new DomainError('PUBLISH_FAILED', 'the change is recorded but Kafka has not acknowledged it; retry with the same order_id', meta, err);
    }
  }

  private async publish(couponId: string, members: string[]): Promise<void> {
    const outbox = couponKeys(couponId).outbox;
    await Promise.all(members.map((member) => {
      const key = `${couponId}\u0000${member}`;
      let pending = this.inFlight.get(key);
      if (!pending) {
        pending = this.publishOne(couponId, outbox, member).finally(() => this.inFlight.delete(key));
        this.inFlight.set(key, pending);
      }
      return pending;
    }));
  }

  private async publishOne(couponId: string, outbox: string, member: string): Promise<void> {
    const entry = parseOutboxEntry(member);
    if (entry) {
      const event = redemptionEvent(couponId, entry.userId, entry.change);
      await this.d.publisher.send(this.d.topic, { key: couponId, value: this.d.encoder.encode(event) });
    } else {
      this.d.log.error({ couponId, member }, 'unreadable redemption outbox entry dropped');
    }
    // A failed removal only means one harmless republish later.
    await this.d.redis.zrem(outbox, member).catch((err: unknown) => this.d.log.warn({ couponId, err: (err as Error).message }, 'could not drop an acknowledged outbox entry'));
  }

  private async couponOrThrow(couponId: string) {
    const row = isUuid(couponId) ? await findCoupon(this.d.db, couponId) : undefined;
    if (!row) throw new DomainError('COUPON_NOT_FOUND', `no coupon with id ${couponId}`, { coupon_id: couponId });
    return row;
  }

  /**
   * For a read of a user's coupon: loads the coupon's redemption state if Redis lost it (UNAVAILABLE
   * while the load waits for the ledger to catch up), so the read never answers from redemption
   * columns that may still lag a change already answered OK. A no-op for a loaded coupon.
   */
  async ensureLoaded(couponId: string): Promise<void> {
    // Past its retention the coupon takes no more changes and its keys went on purpose: the
    // ledger is final, and a read needs no load (RedeemCoupon and CancelRedemption still load).
    const deadline = retentionDeadline(await this.couponOrThrow(couponId), this.d.scripts.retentionMs);
    if (deadline > 0 && this.now() >= deadline) return;
    await this.load(couponId);
  }

  /**
   * Loads every redemption change the ledger holds for the coupon into Redis, once the ledger can
   * be trusted for it (the guard), then marks the coupon loaded. Needed once per coupon per Redis
   * lifetime (or after its keys expired): a new coupon is marked loaded when it is created. The
   * ledger comes a page at a time, each page in short script calls, so neither this process nor
   * Redis ever handles the whole coupon at once.
   */
  private load(couponId: string): Promise<void> {
    let pending = this.loading.get(couponId);
    if (!pending) {
      pending = this.loadFromLedger(couponId).finally(() => this.loading.delete(couponId));
      this.loading.set(couponId, pending);
    }
    return pending;
  }

  private async loadFromLedger(couponId: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const ready = await this.d.guard.ready(couponId);
      if (ready.status === 'PRESENT') return;
      try {
        const records = await this.loadOnce(couponId, ready.epoch);
        await this.d.guard.rebuilt(couponId);
        if (records > 0) this.d.log.warn({ couponId, records }, 'redemption state loaded from the ledger');
        return;
      } catch (err) {
        // Redis lost state again during the load: nothing was marked loaded. Start over, from
        // the wait: the guard notices the new loss (and refuses until it has settled).
        if (!(err instanceof LoadInterrupted)) throw err;
        this.d.log.warn({ couponId, attempt }, err.message);
        if (attempt >= 3) throw new DomainError('BACKEND_UNAVAILABLE', "Redis kept losing this coupon's redemption state while it was loaded from the ledger; retry shortly", { coupon_id: couponId }, err);
      }
    }
  }

  private async loadOnce(couponId: string, epoch: string | undefined): Promise<number> {
    // One deadline for every call of this load, so its keys expire together (lib/expiry.lua).
    const deadlineMs = deadlineWithoutGate(await this.couponOrThrow(couponId), this.d.scripts.retentionMs, this.now());
    const load = redemptionLoad(this.d.scripts, couponId, deadlineMs, epoch);
    let records = 0;
    for await (const page of couponRedemptions(this.d.db, couponId)) {
      await load.records(page);
      records += page.length;
    }
    await load.markLoaded();
    return records;
  }

  /**
   * Puts one user's ledger row (seq, issued_at) back when Redis lacks it: the issuer committed the
   * row but has not marked it in Redis yet, or Redis lost it. Needs no wait for the ledger
   * consumer: the coupon is loaded, so every later change of this user is in Redis already, and the
   * script never overwrites newer state. False when the ledger has not issued the user the coupon.
   */
  private async restoreUser(couponId: string, userId: string, deadlineMs?: number): Promise<boolean> {
    const record = isUuid(couponId) ? await userRedemption(this.d.db, couponId, userId) : undefined;
    if (!record) return false;
    await restoreRedemption(this.d.scripts, couponId, [record], deadlineMs);
    return true;
  }
}
