// The index of active coupons (keys.ts, gate:active): the only coupons the recovery loops walk, so
// an idle system does no work per old coupon (docs/design.md#growth).
//
// The rule that keeps it safe: a coupon never holds a pending reservation or an outbox entry while
// absent from the index (a crash after reserve must still be recovered). So
// - the gate and redemption mark the coupon (ZADD, score = now) *before* a script that can add
//   either (redemption/redemption-scripts.ts does it for redeem and cancelRedemption, and
//   gate/gate-scripts.ts for gateReserve when the script says it is about to reserve); a process
//   marks a coupon at most once per TOUCH_EVERY_MS;
// - the recovery loop drops a coupon only when it found neither, and only if its mark is older than
//   a generous IDLE_MS, checked and removed atomically (active-prune.lua): a mark made after that
//   check keeps it, and a script that relied on an older mark ran long before the check.
// One global key per KAFKA_TOPIC_PREFIX, as before; per-coupon keys keep their hash tags. On Redis
// Cluster the index lives on another shard than the coupon: a failover that loses the mark but not
// the reservation (two faults at once) hides the reservation until the coupon is next marked.
import type { Redis } from './redis.ts';
import { runScript } from './scripts.ts';

/** How often one process re-marks a coupon it keeps using. */
export const TOUCH_EVERY_MS = 1_000;
/**
 * How long a coupon with nothing pending must have gone unmarked before the recovery loop drops it.
 * Far above TOUCH_EVERY_MS plus any pause between a mark and its script, and above the clock skew
 * between processes (the scores are their clocks).
 */
export const IDLE_MS = 60_000;
const PAGE = 500;
/** Coupons moved from the legacy index per recovery pass. */
const LEGACY_BATCH = 500;

export interface ActiveCoupon { couponId: string; lastActiveMs: number }

export class ActiveCoupons {
  readonly key: string;
  private readonly redis: Redis;
  private readonly now: () => number;
  /** When this process last marked each coupon; entries older than TOUCH_EVERY_MS are dropped. */
  private readonly marked = new Map<string, number>();

  constructor(redis: Redis, key: string, now: () => number = Date.now) {
    this.redis = redis;
    this.key = key;
    this.now = now;
  }

  /** True when this process marked the coupon within TOUCH_EVERY_MS (touch would do nothing). */
  markedRecently(couponId: string): boolean {
    const now = this.now();
    const last = this.marked.get(couponId);
    return last !== undefined && now >= last && now - last < TOUCH_EVERY_MS;
  }

  /** Marks the coupon active. Call it before any script that can add a pending or outbox entry. */
  async touch(couponId: string): Promise<void> {
    if (this.markedRecently(couponId)) return;
    const now = this.now();
    // GT: a process whose clock is behind never moves a mark back.
    await this.redis.zadd(this.key, 'GT', now, couponId);
    this.marked.set(couponId, now);
    if (this.marked.size > 10_000) {
      for (const [id, at] of this.marked) if (now - at >= TOUCH_EVERY_MS) this.marked.delete(id);
    }
  }

  /** The index a page at a time, least recently marked first. A coupon dropped meanwhile may shift another to the next pass. */
  async *pages(pageSize = PAGE): AsyncGenerator<ActiveCoupon[]> {
    for (let offset = 0; ; offset += pageSize) {
      const flat = await this.redis.zrange(this.key, String(offset), String(offset + pageSize - 1), 'WITHSCORES');
      if (flat.length === 0) return;
      const page: ActiveCoupon[] = [];
      for (let i = 0; i < flat.length; i += 2) page.push({ couponId: flat[i]!, lastActiveMs: Number(flat[i + 1]) });
      yield page;
      if (page.length < pageSize) return;
    }
  }

  /** Drops these coupons (found with nothing pending) unless marked after `cutoffMs`. */
  async dropIdle(couponIds: string[], cutoffMs: number): Promise<number> {
    if (couponIds.length === 0) return 0;
    return Number(await runScript(this.redis, 'activePrune', this.key, [cutoffMs, ...couponIds]));
  }

  /**
   * Moves up to LEGACY_BATCH coupons from the index the code before this one kept (every coupon
   * ever created) into this one, as long idle: the next passes keep those with something pending
   * and drop the rest. Added before removed, so none is ever in neither. O(1) once it is empty.
   */
  async drainLegacy(legacyKey: string): Promise<number> {
    const ids = await this.redis.srandmember(legacyKey, LEGACY_BATCH);
    if (ids.length === 0) return 0;
    await this.redis.zadd(this.key, 'NX', ...ids.flatMap((id) => [0, id]));
    await this.redis.srem(legacyKey, ...ids);
    return ids.length;
  }
}
