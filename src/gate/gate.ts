// The first-come gate (design: invariants I1–I4). One Lua script decides each IssueCoupon
// atomically; the accepted request is published to coupon.v1.issue and the caller hears OK only
// after the broker acknowledged it. A failed publish releases the slot. A crash between reserve and
// publish leaves the user in the pending journal, which the recovery loop republishes.
import { randomUUID } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { Redis } from 'ioredis';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { DomainError } from '../domain-error.ts';
import type { Logger } from '../log.ts';
import type { BatchingPublisher } from '../events/publisher.ts';
import type { Db } from '../store/db.ts';
import { deleteCoupon, findCoupon, insertCoupon, ledgerOf, type CouponRow } from '../store/coupons.ts';
import { couponKeys } from '../store/keys.ts';
import type { CouponScripts, GateMeta } from '../store/scripts.ts';

export type CouponStatusName = 'SCHEDULED' | 'OPEN' | 'SOLD_OUT' | 'CLOSED' | 'COMPLETE';
export type UserCouponStateName = 'NOT_REQUESTED' | 'PENDING' | 'ISSUED' | 'REDEEMED';

export interface CouponView {
  row: CouponRow;
  accepted: number;
  issued: number;
  remaining: number;
  status: CouponStatusName;
}

export interface NewCoupon {
  name: string;
  totalQuantity: number;
  opensAt: Date;
  closesAt: Date | null;
  discountAmount: number;
  validUntil: Date | null;
}

/** Encodes CouponIssueRequested in the registry's wire format. */
export interface IssueEncoder { encode(message: ReturnType<typeof create<typeof CouponIssueRequestedSchema>>): Buffer }

export interface GateDeps {
  db: Db;
  redis: Redis;
  scripts: CouponScripts;
  publisher: BatchingPublisher;
  encoder: IssueEncoder;
  /** The issue topic (coupon.v1.issue under KAFKA_TOPIC_PREFIX). */
  topic: string;
  /** The set of this environment's coupons that the recovery loop walks (couponIndexKey). */
  indexKey: string;
  log: Logger;
  now?: () => number;
  /**
   * True when the issuer has consumed every record now on the issue topic. The gate is rebuilt
   * from the ledger only then: records still in flight would otherwise be missing from it.
   */
  issuerCaughtUp: () => Promise<boolean>;
  /** PUBLISH_TIMEOUT_MS: bounds how long a repeat waits for the first request's publish. */
  publishTimeoutMs: number;
  /** Testing only: "crash-after-reserve" kills the process between reserve and publish. */
  failpoint?: string | undefined;
}

export function deriveStatus(row: Pick<CouponRow, 'opens_at' | 'closes_at' | 'total_quantity'>, accepted: number, issued: number, nowMs: number): CouponStatusName {
  if (nowMs < row.opens_at.getTime()) return 'SCHEDULED';
  if (issued >= row.total_quantity) return 'COMPLETE';
  if (accepted >= row.total_quantity) return 'SOLD_OUT';
  if (row.closes_at && nowMs >= row.closes_at.getTime()) return 'CLOSED';
  return 'OPEN';
}

const metaOf = (row: CouponRow): GateMeta => ({
  total: row.total_quantity,
  opensMs: row.opens_at.getTime(),
  closesMs: row.closes_at?.getTime() ?? 0,
  validUntilMs: row.valid_until?.getTime() ?? 0,
});

export class Gate {
  private readonly d: GateDeps;
  private readonly now: () => number;
  /** Publishes in flight in this process, by coupon and user: true once acknowledged. */
  private readonly inFlight = new Map<string, Promise<boolean>>();
  /** One rebuild per coupon at a time in this process, however many requests find it missing. */
  private readonly arming = new Map<string, Promise<boolean>>();

  constructor(deps: GateDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
  }

  /** Persists the coupon, then arms its gate. If arming fails, the row is removed: nothing half-made. */
  async createCoupon(input: NewCoupon): Promise<CouponView> {
    const row = await insertCoupon(this.d.db, {
      id: randomUUID(),
      name: input.name,
      total_quantity: input.totalQuantity,
      discount_amount: input.discountAmount,
      opens_at: input.opensAt,
      closes_at: input.closesAt,
      valid_until: input.validUntil,
    });
    try {
      await this.d.scripts.gateLoad(row.id, metaOf(row));
      // A new coupon has no redemption history to load from the ledger.
      await this.d.redis.set(couponKeys(row.id).redeemLoaded, '1');
      await this.d.redis.sadd(this.d.indexKey, row.id);
    } catch (err) {
      await deleteCoupon(this.d.db, row.id).catch(() => undefined);
      throw new DomainError('BACKEND_UNAVAILABLE', 'Redis is unreachable; the coupon was not created', {}, err);
    }
    this.d.log.info({ couponId: row.id, total: row.total_quantity }, 'coupon created');
    return this.view(row, 0);
  }

  async getCoupon(couponId: string): Promise<CouponView> {
    const row = isUuid(couponId) ? await findCoupon(this.d.db, couponId) : undefined;
    if (!row) throw notFound(couponId);
    const accepted = await this.d.redis.hlen(couponKeys(couponId).winners);
    // Without gate state (Redis lost it), the ledger is the best lower bound.
    return this.view(row, Math.max(accepted, row.issued_count));
  }

  /** IssueCoupon: wins one slot for the user or says why not. */
  async issue(couponId: string, userId: string): Promise<{ seq: number; state: UserCouponStateName }> {
    // A repeat that finds the user's first request still publishing must not answer OK before
    // that publish is acknowledged: if it fails, the slot is released. Wait for the outcome, and
    // if the slot was released, try once more like a fresh request.
    for (let attempt = 0; ; attempt++) {
      const outcome = await this.issueOnce(couponId, userId);
      if (outcome !== 'RELEASED_WHILE_WAITING' || attempt >= 1) {
        if (outcome === 'RELEASED_WHILE_WAITING') throw new DomainError('PUBLISH_FAILED', 'could not record the request; the slot was released, retry', { coupon_id: couponId });
        return outcome;
      }
    }
  }

  private async issueOnce(couponId: string, userId: string): Promise<{ seq: number; state: UserCouponStateName } | 'RELEASED_WHILE_WAITING'> {
    const nowMs = this.now();
    let result = await this.d.scripts.gateReserve(couponId, userId, nowMs);
    if (result.status === 'NOT_FOUND' && (await this.arm(couponId))) {
      result = await this.d.scripts.gateReserve(couponId, userId, nowMs);
    }
    switch (result.status) {
      case 'NOT_FOUND': throw notFound(couponId);
      case 'NOT_OPEN': throw new DomainError('COUPON_NOT_OPEN', 'the coupon is not open yet', { coupon_id: couponId });
      case 'CLOSED': throw new DomainError('COUPON_CLOSED', 'the coupon is closed', { coupon_id: couponId });
      case 'SOLD_OUT': throw new DomainError('COUPON_SOLD_OUT', 'the coupon is sold out', { coupon_id: couponId });
      case 'EXISTING':
        if (result.unacked && !(await this.acknowledged(couponId, userId, result.seq))) return 'RELEASED_WHILE_WAITING';
        return { seq: result.seq, state: result.state };
      case 'RESERVED': break;
    }
    const seq = result.seq;
    if (this.d.failpoint === 'crash-after-reserve') process.kill(process.pid, 'SIGKILL');
    const key = `${couponId}\u0000${userId}`;
    const settled = this.publishOrRelease(couponId, userId, seq, nowMs, result.total);
    this.inFlight.set(key, settled.then((r) => r.ok, () => false));
    try {
      const r = await settled;
      if (!r.ok) throw new DomainError('PUBLISH_FAILED', 'could not record the request; the slot was released, retry', { coupon_id: couponId }, r.err);
      return { seq, state: 'PENDING' };
    } finally {
      this.inFlight.delete(key);
    }
  }

  private async publishOrRelease(couponId: string, userId: string, seq: number, nowMs: number, total: number): Promise<{ ok: true } | { ok: false; err: unknown }> {
    try {
      await this.publish(couponId, userId, seq, nowMs, total);
    } catch (err) {
      const released = await this.d.scripts.gateRelease(couponId, userId, seq);
      // The issuer already took the record: the coupon is coming, so the honest answer is OK.
      if (released === 'CLAIMED') return { ok: true };
      this.d.log.warn({ couponId, userId, seq, released, err: (err as Error).message }, 'publish failed; slot released');
      return { ok: false, err };
    }
    await this.d.scripts.gateConfirm(couponId, userId);
    return { ok: true };
  }

  /**
   * Waits until the publish of (user, seq) is acknowledged (true) or released (false). Requests in
   * this process share the in-flight promise; others poll Redis. A reservation stuck by a crash
   * stays pending until recovery, so the wait is bounded and then answers UNAVAILABLE.
   */
  private async acknowledged(couponId: string, userId: string, seq: number): Promise<boolean> {
    const local = this.inFlight.get(`${couponId}\u0000${userId}`);
    if (local) return local;
    const k = couponKeys(couponId);
    const deadline = this.now() + this.d.publishTimeoutMs + 1_000;
    while (this.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
      const [[, pending], [, held]] = (await this.d.redis.pipeline().zscore(k.pending, userId).hget(k.winners, userId).exec()) as [[unknown, string | null], [unknown, string | null]];
      if (held !== String(seq)) return false;
      if (pending === null) return true;
    }
    throw new DomainError('PUBLISH_FAILED', 'your earlier request for this coupon is still being recorded; retry', { coupon_id: couponId });
  }

  /**
   * Republishes reservations whose publish never finished (the process died between reserve and
   * the broker's ack). Duplicates are harmless: the issuer writes each (coupon, user) once.
   */
  async recoverStale(staleMs: number): Promise<number> {
    let republished = 0;
    const cutoff = this.now() - staleMs;
    for (const couponId of await this.d.redis.smembers(this.d.indexKey)) {
      const k = couponKeys(couponId);
      const stale = await this.d.redis.zrangebyscore(k.pending, '-inf', cutoff, 'WITHSCORES', 'LIMIT', 0, 1000);
      for (let i = 0; i < stale.length; i += 2) {
        const userId = stale[i]!;
        const reservedAt = Number(stale[i + 1]);
        const seq = await this.d.redis.hget(k.winners, userId);
        if (seq === null) { await this.d.redis.zrem(k.pending, userId); continue; }
        await this.publish(couponId, userId, Number(seq), reservedAt, Number(await this.d.redis.hget(k.meta, 'total')));
        await this.d.scripts.gateConfirm(couponId, userId);
        republished++;
      }
    }
    if (republished > 0) this.d.log.warn({ republished }, 'recovered reservations whose publish had not finished');
    return republished;
  }

  private async publish(couponId: string, userId: string, seq: number, requestedAtMs: number, total: number): Promise<void> {
    const value = this.d.encoder.encode(create(CouponIssueRequestedSchema, {
      couponId, userId, seq: BigInt(seq), requestedAt: timestampFromDate(new Date(requestedAtMs)), totalQuantity: BigInt(total),
    }));
    await this.d.publisher.send(this.d.topic, { key: couponId, value });
  }

  /** Arms a coupon that is in the ledger but not in Redis (Redis restarted). False if unknown. */
  private arm(couponId: string): Promise<boolean> {
    let pending = this.arming.get(couponId);
    if (!pending) {
      pending = this.rebuild(couponId).finally(() => this.arming.delete(couponId));
      this.arming.set(couponId, pending);
    }
    return pending;
  }

  private async rebuild(couponId: string): Promise<boolean> {
    if (!isUuid(couponId)) return false;
    const row = await findCoupon(this.d.db, couponId);
    if (!row) return false;
    if (!(await this.d.issuerCaughtUp())) {
      throw new DomainError('BACKEND_UNAVAILABLE', 'the gate for this coupon is being rebuilt after a Redis restart; retry shortly', { coupon_id: couponId });
    }
    const ledger = await ledgerOf(this.d.db, couponId);
    await this.d.scripts.gateLoad(couponId, metaOf(row), ledger);
    await this.d.redis.sadd(this.d.indexKey, couponId);
    this.d.log.warn({ couponId, issued: ledger.length }, 'gate state was missing; rebuilt from the ledger');
    return true;
  }

  private view(row: CouponRow, accepted: number): CouponView {
    const issued = row.issued_count;
    return {
      row, accepted, issued,
      remaining: Math.max(0, row.total_quantity - accepted),
      status: deriveStatus(row, accepted, issued, this.now()),
    };
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string) => UUID.test(s);
const notFound = (couponId: string) => new DomainError('COUPON_NOT_FOUND', `no coupon with id ${couponId}`, { coupon_id: couponId });
