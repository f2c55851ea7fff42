// Sold out, answered in process (docs/decisions: the in-process sold-out view).
//
// Most calls of a big sale arrive after the coupon sold out. Once its sell-out is final (every unit
// has a winner and the pending journal is empty, so no release can give a slot back), the gate's
// answer to a user who is not a winner can no longer change, except through a new arming (a rebuild
// after a Redis loss) or an operator's change (both write a new epoch into meta), a release after a
// failover (counted in meta), or the expiry of the coupon's keys. So each
// process keeps, per such coupon, a Bloom filter of its winners:
// - a user the filter has certainly never seen is refused here (COUPON_SOLD_OUT, or COUPON_CLOSED
//   once the window has closed, as the reserve script would order them), with no Redis call;
// - anyone who may be a winner goes to Redis as before, and a winner hears their own seq (or
//   UNAVAILABLE when Redis is down), never SOLD_OUT.
// Staleness: a call that finds the view's last check of the epoch older than `recheckMs` waits for
// a new check (one HMGET, one in flight per coupon, at most RECHECK_WAIT_MS) and answers from what it found.
// An operator's change, a rebuild or an expiry is therefore noticed within recheckMs plus one Redis
// round trip while Redis answers. When Redis does not answer, the view keeps answering until
// lifetimeMs after its last good check. A wrong SOLD_OUT inside that window is the only difference a
// caller can see.
import type { Logger } from '../log.ts';
import { countLocalAnswer } from '../metrics/gate.ts';
import type { Redis } from '../store/redis.ts';
import { couponKeys } from '../store/keys.ts';
import type { CouponScripts } from '../store/scripts.ts';
import { gateSoldOut, soldOutSignature } from './gate-scripts.ts';
import { BloomFilter } from './bloom.ts';

/** A refusal answered in process, or undefined: ask Redis. */
export type LocalAnswer = 'SOLD_OUT' | 'CLOSED' | undefined;

export interface SoldOutViewOptions {
  redis: Redis;
  scripts: CouponScripts;
  log: Logger;
  /** GATE_LOCAL_RECHECK_MS: how old a view's last epoch check may be before a call starts another. */
  recheckMs: number;
  /** GATE_LOCAL_LIFETIME_MS: how long after its last good check a view still answers. */
  lifetimeMs: number;
  now?: () => number;
}

interface View { epoch: string; winners: BloomFilter; closesMs: number; expireAtMs: number; checkedAtMs: number; checking: Promise<void> | undefined }

/** How long a call waits for a recheck before it answers from the view (Redis slow or down). */
const RECHECK_WAIT_MS = 50;

/** Winners read per HSCAN call while a view is built. */
const SCAN_COUNT = 5_000;

export class SoldOutViews {
  private readonly o: SoldOutViewOptions;
  private readonly now: () => number;
  private readonly views = new Map<string, View>();
  /** Coupons whose view is being built, so a burst of SOLD_OUT answers builds it once. */
  private readonly building = new Set<string>();

  constructor(options: SoldOutViewOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
  }

  /**
   * The refusal for a user who is certainly no winner of a finally sold-out coupon, or undefined: ask
   * Redis. Synchronous while the view is fresh; a promise while it waits for a recheck.
   */
  answer(couponId: string, userId: string, nowMs: number): LocalAnswer | Promise<LocalAnswer> {
    const view = this.views.get(couponId);
    if (!view) return undefined;
    if (nowMs - view.checkedAtMs >= this.o.recheckMs) {
      const check = view.checking ?? this.recheck(couponId, view);
      let timer: NodeJS.Timeout | undefined;
      const waited = new Promise<void>((resolve) => { timer = setTimeout(resolve, RECHECK_WAIT_MS); });
      return Promise.race([check, waited]).then(() => {
        clearTimeout(timer);
        const now = this.now();
        const current = this.views.get(couponId);
        return current ? this.fromView(current, userId, now) : undefined;
      });
    }
    return this.fromView(view, userId, nowMs);
  }

  private fromView(view: View, userId: string, nowMs: number): LocalAnswer {
    if (nowMs - view.checkedAtMs >= this.o.lifetimeMs || (view.expireAtMs > 0 && nowMs >= view.expireAtMs)) return undefined;
    if (view.winners.mayContain(userId)) return undefined;
    const outcome = view.closesMs > 0 && nowMs >= view.closesMs ? 'CLOSED' : 'SOLD_OUT';
    countLocalAnswer(outcome);
    return outcome;
  }

  /** The gate answered SOLD_OUT from Redis: build the coupon's view if its sell-out is final. */
  soldOut(couponId: string): void {
    if (this.views.has(couponId) || this.building.has(couponId)) return;
    this.building.add(couponId);
    this.build(couponId)
      .catch((err: unknown) => this.o.log.warn({ couponId, err: (err as Error).message }, 'could not build the sold-out view; answering from Redis'))
      .finally(() => this.building.delete(couponId));
  }

  /** Views held now, and their bytes: for tests and the bench. */
  stats(): { coupons: number; bytes: number } {
    let bytes = 0;
    for (const v of this.views.values()) bytes += v.winners.bytes;
    return { coupons: this.views.size, bytes };
  }

  private async build(couponId: string): Promise<void> {
    const before = await gateSoldOut(this.o.scripts, couponId);
    if (!before?.final) return;
    const winners = new BloomFilter(before.winners);
    const key = couponKeys(couponId).winners;
    let cursor = '0';
    do {
      const [next, flat] = await this.o.redis.hscan(key, cursor, 'COUNT', SCAN_COUNT);
      for (let i = 0; i < flat.length; i += 2) winners.add(flat[i]!);
      cursor = next;
    } while (cursor !== '0');
    // The same arming from start to end of the scan: nothing could add or remove a winner meanwhile.
    const after = await gateSoldOut(this.o.scripts, couponId);
    if (!after?.final || after.epoch !== before.epoch) return;
    this.views.set(couponId, { epoch: after.epoch, winners, closesMs: after.closesMs, expireAtMs: after.expireAtMs, checkedAtMs: this.now(), checking: undefined });
  }

  /** One HMGET: the view stands while the signature it was built on stands (gate-sold-out.lua says why). */
  private recheck(couponId: string, view: View): Promise<void> {
    const startedAt = this.now();
    view.checking = soldOutSignature(this.o.redis, couponId)
      .then((check) => {
        if (check?.signature !== view.epoch) { this.views.delete(couponId); return; }
        view.checkedAtMs = startedAt;
        view.closesMs = check.closesMs;
        view.expireAtMs = check.expireAtMs;
      })
      // Redis did not answer: the view ages out lifetimeMs after its last good check.
      .catch(() => undefined)
      .finally(() => { view.checking = undefined; });
    return view.checking;
  }
}
