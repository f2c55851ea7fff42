// Redemption for the payment service (DESIGN.md, I5): redeem once, compensate exactly once.
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
import type { Redis } from 'ioredis';
import { CouponRedemptionChangedSchema, RedemptionTransition, type CouponRedemptionChanged } from '../../gen/coupon/events/v1/redemption_pb.js';
import { DomainError } from '../domain-error.ts';
import { PublishError, type BatchingPublisher } from '../events/publisher.ts';
import type { Logger } from '../log.ts';
import { isUuid } from '../gate/gate.ts';
import type { UserCouponView } from '../gate/user-coupons.ts';
import { findCoupon } from '../store/coupons.ts';
import type { Db } from '../store/db.ts';
import { couponKeys, parseRedemptionValue, type RedemptionValue } from '../store/keys.ts';

export { parseRedemptionValue, type RedemptionValue };
import type { CouponScripts, RedemptionOutcome } from '../store/scripts.ts';
import { couponRedemptions, userRedemption } from './ledger.ts';

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
  /** The set of this environment's coupons that the recovery loop walks (couponIndexKey). */
  indexKey: string;
  log: Logger;
  now?: () => number;
  /**
   * True when the ledger consumer has applied every event now on the redemption topic. A coupon's
   * redemption state is loaded from the ledger only then: an event not yet applied would be
   * missing from it, and loading older state could let a second order redeem the coupon.
   */
  ledgerCaughtUp: () => Promise<boolean>;
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
    let validUntilMs: number | undefined;
    // At most: meta lost → read the coupon; coupon not loaded → load it; user lost → restore; decide.
    for (let attempt = 0; attempt < 5; attempt++) {
      const o = await this.d.scripts.redeem(couponId, userId, orderId, this.now(), validUntilMs);
      switch (o.status) {
        case 'NO_META':
          validUntilMs = (await this.couponOrThrow(couponId)).valid_until?.getTime() ?? 0;
          continue;
        case 'UNLOADED':
          await this.load(couponId);
          continue;
        case 'MISSING':
          // Pending, never won, or state Redis lost: the ledger decides. An issued coupon is
          // restored, never answered NOT_ISSUED.
          if (await this.restoreUser(couponId, userId)) continue;
          throw new DomainError('COUPON_NOT_ISSUED', 'the user holds no issued coupon (never won, or not yet issued)', meta);
        case 'ALREADY_REDEEMED':
          throw new DomainError('COUPON_ALREADY_REDEEMED', 'the coupon is redeemed by another order', meta);
        case 'CANCELLED':
          throw new DomainError('REDEMPTION_CANCELLED', "this order's redemption was cancelled; it cannot redeem again", meta);
        case 'EXPIRED':
          throw new DomainError('COUPON_EXPIRED', 'the coupon is past its valid_until', meta);
        case 'REDEEMED':
        case 'UNCHANGED':
          await this.publishJournaled(couponId, o.outbox, meta);
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
    for (let attempt = 0; attempt < 5; attempt++) {
      const o = await this.d.scripts.cancelRedemption(couponId, userId, orderId, this.now(), ledgerChecked);
      switch (o.status) {
        case 'NO_META':
          await this.couponOrThrow(couponId);
          await this.load(couponId);
          await this.restoreUser(couponId, userId);
          ledgerChecked = true;
          continue;
        case 'UNLOADED':
          // A lost REDEEMED state must be loaded first, or this cancel would be a silent no-op.
          await this.load(couponId);
          continue;
        case 'MISSING':
          await this.restoreUser(couponId, userId);
          ledgerChecked = true;
          continue;
        case 'ORDER_MISMATCH':
          throw new DomainError('ORDER_MISMATCH', 'the coupon is redeemed by another order; nothing was cancelled', meta);
        case 'CANCELLED':
        case 'RECORDED':
        case 'UNCHANGED':
          await this.publishJournaled(couponId, o.outbox, meta);
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
    const coupons = await this.d.redis.smembers(this.d.indexKey);
    const journals = await Promise.all(coupons.map((couponId) => this.d.redis.zrangebylex(couponKeys(couponId).outbox, '-', '+', 'LIMIT', 0, 1_000)));
    let republished = 0;
    const failures: unknown[] = [];
    await Promise.all(coupons.map(async (couponId, i) => {
      const stale = journals[i]!.filter((member) => (parseOutboxEntry(member)?.change.atMs ?? 0) < cutoff);
      if (stale.length === 0) return;
      try {
        await this.publish(couponId, stale);
        republished += stale.length;
      } catch (err) { failures.push(err); }
    }));
    if (republished > 0) this.d.log.warn({ republished }, 'republished redemption changes whose publish had not finished');
    if (failures.length > 0) throw failures[0];
    return republished;
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
   * Loads every redemption change the ledger holds for the coupon into Redis, once the ledger
   * consumer has applied everything on the topic, then marks the coupon loaded. Needed once per
   * coupon per Redis lifetime: for a new coupon the ledger holds nothing and this is one query.
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
    const caughtUp = await this.d.ledgerCaughtUp().catch((err: unknown) => {
      this.d.log.warn({ couponId, err: (err as Error).message }, 'could not check the redemption ledger consumer');
      return false;
    });
    if (!caughtUp) {
      throw new DomainError('BACKEND_UNAVAILABLE', "this coupon's redemption state is being loaded from the ledger; retry shortly", { coupon_id: couponId });
    }
    const records = await couponRedemptions(this.d.db, couponId);
    await this.d.scripts.restoreRedemption(couponId, records, true);
    // The recovery loop walks this set for journaled changes.
    await this.d.redis.sadd(this.d.indexKey, couponId);
    if (records.length > 0) this.d.log.warn({ couponId, records: records.length }, 'redemption state loaded from the ledger');
  }

  /**
   * Puts one user's ledger row (seq, issued_at) back when Redis lacks it: the issuer committed the
   * row but has not marked it in Redis yet, or Redis lost it. Needs no wait for the ledger
   * consumer: the coupon is loaded, so every later change of this user is in Redis already, and the
   * script never overwrites newer state. False when the ledger has not issued the user the coupon.
   */
  private async restoreUser(couponId: string, userId: string): Promise<boolean> {
    const record = isUuid(couponId) ? await userRedemption(this.d.db, couponId, userId) : undefined;
    if (!record) return false;
    await this.d.scripts.restoreRedemption(couponId, [record], false);
    return true;
  }
}
