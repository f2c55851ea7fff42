// When a coupon's state lost by Redis may be rebuilt from the ledger (docs/design.md#redis-loses-everything:
// rebuild only from facts that can no longer change). Used by the gate rebuild
// (gate/rebuild.ts) and by the redemption load (redemption/redemption.ts).
//
// 1. The first process to find the state missing records when, in Redis and with SET NX, so every
//    process waits for the same moment: rebuild-after = first noticed + settle.
// 2. settle = PUBLISH_TIMEOUT_MS + SETTLE_MARGIN_MS. No publish accepted before the loss can reach
//    Kafka later than PUBLISH_TIMEOUT_MS after it started (events/kafka.ts, createPublishingKafka),
//    and it started before the loss, so before it was noticed.
// 3. Then the end of the coupon's partition of the topic is read (the topic is keyed by coupon id),
//    and the consumer group that writes the ledger must have committed up to it: every such record
//    is in the ledger, or dropped as stale, or dead-lettered. Other partitions are not awaited.
// 4. The coupon has no unresolved dead letters that may own a seq or a change (checked before
//    reading the end, and again once the consumer caught up; store/dead-letters.ts
//    blockingDeadLetters): those records still own their seqs or versions, and a rebuild without
//    them would hand them out again. Replayed or discarded ones, and ones that can never own their
//    seq, do not count.
// Until all of that holds, callers get BACKEND_UNAVAILABLE saying what is awaited.
import type { Redis } from './redis.ts';
import { DomainError } from '../domain/errors.ts';
import type { Alerter } from '../events/alert.ts';
import type { Logger } from '../log.ts';
import type { Db } from './db.ts';
import { blockingDeadLetters } from './dead-letters.ts';
import { lossKeys, type RebuiltState } from './keys.ts';
import type { CouponScripts } from './scripts.ts';

/**
 * Covers what the publish bound cannot: a reservation whose Redis reply arrived just before the
 * loss and whose publish was queued a moment after, bytes already on the wire at the deadline that
 * the broker appends a moment later, and clock granularity.
 */
export const SETTLE_MARGIN_MS = 2_000;

/**
 * The bound a loss's fence stands for (docs/decisions/0010-rebuild-only-from-settled-facts.md), from
 * the loss marker (the moment the rebuild may start, Redis time): SETTLE_MARGIN_MS before it. The
 * issuer drops records behind the fence reserved before it (store/fences.ts), and
 * the rebuilt gate reserves nothing with an earlier time (gate-load.lua's reservation floor), so no
 * record of a caller told OK is ever dropped by it. 0 when the marker names no time.
 */
export function fenceBoundMs(marker: string | undefined): number {
  const at = Number(marker);
  return marker && Number.isSafeInteger(at) && at > SETTLE_MARGIN_MS ? at - SETTLE_MARGIN_MS : 0;
}

/** How long after a loss is noticed a rebuild may start (see the top of this file). */
export const lossSettleMs = (publishTimeoutMs: number) => publishTimeoutMs + SETTLE_MARGIN_MS;

// A marker outlives its rebuild-after by this much, then expires: one left by a process that died
// mid-rebuild must not let a later loss skip the wait. An expired one only makes a rebuild wait again.
const MARKER_GRACE_MS = 10 * 60_000;

// A blocked coupon is asked about on every request; a person needs to hear about it once in a while.
const ALERT_EVERY_MS = 60_000;

/** `marker` is the loss marker's value: a rebuild passes it on, and it starts only while the marker still holds it. */
type LossNoticed = { status: 'PRESENT' } | { status: 'LOST'; rebuildAfterMs: number; nowMs: number; marker: string };

/**
 * Notes that the coupon's `state` is missing, unless it is present after all (loss-noticed.lua).
 * The first process to notice sets when a rebuild may start: noticed + `settleMs`, Redis time.
 */
async function lossNoticed(scripts: CouponScripts, couponId: string, state: RebuiltState, settleMs: number, markerTtlMs: number): Promise<LossNoticed> {
  const [status, after, now] = (await scripts.run('lossNoticed', { couponId, state }, [settleMs, markerTtlMs])) as [string, string?, string?];
  if (status === 'PRESENT') return { status };
  return { status: 'LOST', rebuildAfterMs: Number(after), nowMs: Number(now), marker: after ?? '' };
}

/**
 * 'LOST': the state may be loaded from the ledger now. `epoch` is the loss marker's value the wait
 * was for: the load starts only while the marker still holds it, so a second loss after the wait
 * (which takes the marker with it) makes the load wait again instead of skipping the wait.
 */
export type Readiness = { status: 'PRESENT' } | { status: 'LOST'; epoch?: string | undefined };

/** What a rebuild asks before loading from the ledger, and tells once it has. */
export interface RebuildGuard {
  ready(couponId: string): Promise<Readiness>;
  rebuilt(couponId: string): Promise<void>;
}

/** For rebuilds that need no wait (benchmarks, tests of the loading mechanics): the ledger is final. */
export const ledgerIsFinal: RebuildGuard = { ready: () => Promise.resolve({ status: 'LOST' }), rebuilt: () => Promise.resolve() };

export interface LossGuardDeps {
  redis: Redis;
  scripts: CouponScripts;
  db: Db;
  alerter: Alerter;
  log: Logger;
  state: RebuiltState;
  /** lossSettleMs(PUBLISH_TIMEOUT_MS). */
  settleMs: number;
  /**
   * True once the ledger's consumer group has committed every record now in the coupon's partition
   * of its topic (the topic is keyed by coupon id; events/consumer-lag.ts).
   */
  consumerCaughtUp: (couponId: string) => Promise<boolean>;
  /**
   * Appends a fence record for this loss (`marker`) to the coupon's partition and resolves once Kafka
   * acknowledged it (events/fence.ts), so the caught-up check that follows reads an end offset past
   * every record acknowledged before the loss.
   */
  fence?: (couponId: string, marker: string) => Promise<void>;
  /** That consumer's topic (under KAFKA_TOPIC_PREFIX), whose dead letters table dead_letters records. */
  topic: string;
  /** Its dead-letter topic, named in messages. */
  dltTopic: string;
  /** Alert event raised while unreplayed dead letters block a rebuild. */
  blockedAlert: string;
}

const WORDS = {
  gate: { state: 'gate state', consumer: 'coupon-issuer', replay: 'npm run dlt:replay', owns: 'their seqs' },
  redemption: { state: 'redemption state', consumer: 'the redemption ledger', replay: 'npm run dlt:replay -- redemption', owns: 'their changes' },
} as const;

export class LossGuard implements RebuildGuard {
  private readonly d: LossGuardDeps;
  private readonly words: (typeof WORDS)[RebuiltState];
  private readonly alerted = new Map<string, number>();

  constructor(deps: LossGuardDeps) {
    this.d = deps;
    this.words = WORDS[deps.state];
  }

  /**
   * LOST when the coupon's state is missing and may be rebuilt from the ledger now; PRESENT when
   * it is there after all (another process rebuilt it). Throws BACKEND_UNAVAILABLE until then.
   */
  async ready(couponId: string): Promise<Readiness> {
    const noticed = await lossNoticed(this.d.scripts, couponId, this.d.state, this.d.settleMs, this.d.settleMs + MARKER_GRACE_MS);
    if (noticed.status === 'PRESENT') return noticed;
    const waitMs = noticed.rebuildAfterMs - noticed.nowMs;
    if (waitMs > 0) {
      throw this.unavailable(couponId, `Redis lost this coupon's ${this.words.state}; it is rebuilt from the ledger in about ${Math.ceil(waitMs / 1000)} s, once nothing accepted before the loss can still reach Kafka; retry shortly`);
    }
    await this.refuseDeadLetters(couponId);
    if (this.d.fence) {
      try {
        await this.d.fence(couponId, noticed.marker);
      } catch (err) {
        this.d.log.warn({ couponId, err: (err as Error).message }, 'could not write the fence record of a rebuild');
        throw this.unavailable(couponId, `Redis lost this coupon's ${this.words.state}; the rebuild waits for Kafka to take its fence record; retry shortly`);
      }
    }
    const caughtUp = await this.d.consumerCaughtUp(couponId).catch((err: unknown) => {
      this.d.log.warn({ couponId, err: (err as Error).message }, 'could not check the consumer that writes the ledger');
      return false;
    });
    if (!caughtUp) {
      throw this.unavailable(couponId, `Redis lost this coupon's ${this.words.state}; waiting for ${this.words.consumer} to record everything accepted before the loss; retry shortly`);
    }
    // Records dead-lettered while the consumer caught up.
    await this.refuseDeadLetters(couponId);
    return { status: 'LOST', epoch: noticed.marker };
  }

  /** The state is rebuilt: the marker goes, so a later loss is noticed afresh. */
  async rebuilt(couponId: string): Promise<void> {
    await this.d.redis.del(lossKeys(couponId, this.d.state).marker);
    this.alerted.delete(couponId);
  }

  private async refuseDeadLetters(couponId: string): Promise<void> {
    const count = await blockingDeadLetters(this.d.db, this.d.topic, couponId);
    if (count === 0) return;
    const message = `Redis lost this coupon's ${this.words.state}, and ${count} of its records sit unreplayed in the dead-letter topic ${this.d.dltTopic}; they still own ${this.words.owns}, so the state is not rebuilt until they are replayed (${this.words.replay}) or, if they never can be, discarded (npm run dlt:discard)`;
    const last = this.alerted.get(couponId) ?? 0;
    if (Date.now() - last >= ALERT_EVERY_MS) {
      this.alerted.set(couponId, Date.now());
      await this.d.alerter.notify({ event: this.d.blockedAlert, topic: this.d.topic, dltTopic: this.d.dltTopic, couponId, records: count, error: message });
    }
    throw this.unavailable(couponId, message);
  }

  private unavailable(couponId: string, message: string): DomainError {
    return new DomainError('BACKEND_UNAVAILABLE', message, { coupon_id: couponId });
  }
}
