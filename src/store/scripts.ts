// The one typed wrapper over the project's Redis Lua scripts (src/store/lua/*.lua), loaded with
// ioredis defineCommand (EVALSHA, falling back to EVAL once per connection). Keys are passed in KEYS.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from './redis.ts';
import type { ActiveCoupons } from './active-coupons.ts';
import type { CouponRow, LedgerRow } from './coupons.ts';
import { allCouponKeys, couponKeys, loadTokenKey, stagedFreeKey } from './keys.ts';

export const luaScript = (name: string) => readFileSync(join(import.meta.dirname, 'lua', `${name}.lua`), 'utf8');
// Scripts that share helpers get lib/<name>.lua files in front of their own text (one script per
// call, so Redis still runs each as one atomic unit).
const withLibs = (libs: readonly string[], body: string) => [...libs.map((lib) => luaScript(`lib/${lib}`)), body].join('\n');

const COUPON_KEY_COUNT = allCouponKeys('x').length;

const SCRIPTS = {
  gateLoad: { file: 'gate-load', keys: 8 + COUPON_KEY_COUNT, libs: ['expiry'] },
  gateReserve: { file: 'gate-reserve', keys: 7, libs: ['expiry'] },
  gateConfirm: { file: 'gate-confirm', keys: 2, libs: [] },
  gateStale: { file: 'gate-stale', keys: 2, libs: [] },
  gateRelease: { file: 'gate-release', keys: 6, libs: ['expiry'] },
  issuerClaim: { file: 'issuer-claim', keys: 4, libs: ['expiry'] },
  issuerMarkIssued: { file: 'issuer-mark-issued', keys: 3 + COUPON_KEY_COUNT, libs: ['expiry'] },
  redeem: { file: 'redeem', keys: 7, libs: ['expiry', 'redemption'] },
  cancelRedemption: { file: 'cancel-redemption', keys: 7, libs: ['expiry', 'redemption'] },
  restoreRedemption: { file: 'restore-redemption', keys: 8, libs: ['expiry'] },
  lossNoticed: { file: 'loss-noticed', keys: 2, libs: [] },
  gateSoldOut: { file: 'gate-sold-out', keys: 3, libs: [] },
  gateChange: { file: 'gate-change', keys: 3 + COUPON_KEY_COUNT, libs: [] },
} as const satisfies Record<string, { file: string; keys: number; libs: readonly string[] }>;

type ScriptName = keyof typeof SCRIPTS;

// Script calls that take many rows are split: a call's arguments are spread on the JS stack, and
// one long script would block Redis for every other caller while it runs. No script call carries
// more than CHUNK items (rows, seqs or records).
export const CHUNK = 1_000;
/** How long a load's staged free list and token outlive its last call (a load that died leaves them to expire). */
const STAGED_FREE_TTL_MS = 10 * 60_000;
function* chunks<T>(items: readonly T[]): Generator<T[]> {
  for (let i = 0; i < items.length; i += CHUNK) yield items.slice(i, i + CHUNK);
}

type Call = (...args: (string | number)[]) => Promise<unknown>;

export type ReserveResult =
  | { status: 'RESERVED'; seq: number; total: number }
  | { status: 'EXISTING'; seq: number; state: 'PENDING' | 'ISSUED' | 'REDEEMED'; unacked: boolean }
  | { status: 'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT' | 'PAUSED' };

/**
 * What a redemption script saw and did: `value` is the user's redemption field after the call
 * ("<R|C>|<order id>|<version>|<at ms>", '' when none), and `outbox` this user's journaled changes
 * whose events Kafka has not acknowledged yet (on answers that may be OK).
 */
export interface RedemptionOutcome<S extends string> { status: S; seq: string; issuedMs: string; value: string; outbox: string[] }

export type RedeemStatus = 'REDEEMED' | 'UNCHANGED' | 'ALREADY_REDEEMED' | 'CANCELLED' | 'EXPIRED' | 'MISSING' | 'NO_META' | 'UNLOADED';
export type CancelStatus = 'CANCELLED' | 'RECORDED' | 'UNCHANGED' | 'ORDER_MISMATCH' | 'MISSING' | 'NO_META' | 'UNLOADED';

/** Redemption state as the ledger holds it, for restoreRedemption: a user's row, or a cancelled order. */
export type LedgerRedemptionRecord =
  | { kind: 'row'; userId: string; seq: number; issuedAtMs: number; value: string; version: number }
  | { kind: 'cancelled'; userId: string; orderId: string };

/** gate-sold-out.lua's answer: the arming's epoch ('' before epochs), and whether the sell-out is final. */
export interface SoldOutCheck { epoch: string; final: boolean; winners: number; closesMs: number; expireAtMs: number }
/** A reservation whose publish has not been acknowledged: the user, when it was made, and the seq it holds. */
export interface StaleReservation { userId: string; reservedAtMs: number; seq: number }

/** The issuer's verdict on one record (issuer-claim.lua). */
export type ClaimVerdict = 'OK' | 'STALE' | 'LOST' | 'UNARMED' | 'OUT_OF_RANGE';

/** State of a coupon that Redis can lose and the ledger rebuilds (store/loss-guard.ts). */
export type RebuiltState = 'gate' | 'redemption';

/** `marker` is the loss marker's value: a rebuild passes it on, and it starts only while the marker still holds it. */
export type LossNoticed = { status: 'PRESENT' } | { status: 'LOST'; rebuildAfterMs: number; nowMs: number; marker: string };

/** The key whose absence means the state is lost, and the marker of when it may be rebuilt. */
export function lossKeys(couponId: string, state: RebuiltState): { present: string; marker: string } {
  const k = couponKeys(couponId);
  return state === 'gate' ? { present: k.meta, marker: k.rebuildAfter } : { present: k.redeemLoaded, marker: k.redeemLoadAfter };
}

export interface GateMeta {
  total: number; opensMs: number; closesMs: number; validUntilMs: number;
  /** When every key of the coupon expires (0 = never): see retentionDeadline. */
  expireAtMs: number;
  /** REDIS_RETENTION, kept in meta for the issuer to set the deadline when the coupon completes. */
  retentionMs: number;
  /** An operator paused the coupon (coupons.paused_at): the gate takes no new winners. */
  paused?: boolean;
}

/**
 * Retention (docs/architecture.md#retention): when a coupon's Redis state may go, 0 for never. A coupon is
 * finished once it can no longer be issued (after closes_at, or once complete: sold out and every
 * unit issued) nor redeemed (after valid_until); its state then stays `retentionMs` longer. A
 * coupon without valid_until can be redeemed forever, and one with neither closes_at nor a
 * completion can still be issued, so those keep their state. Later reads come from the ledger.
 */
export function retentionDeadline(row: Pick<CouponRow, 'closes_at' | 'completed_at' | 'valid_until'>, retentionMs: number): number {
  const issuingEnds = row.closes_at ?? row.completed_at;
  if (!row.valid_until || !issuingEnds) return 0;
  return Math.max(issuingEnds.getTime(), row.valid_until.getTime()) + retentionMs;
}

export const gateMetaOf = (row: CouponRow, retentionMs: number): GateMeta => ({
  total: row.total_quantity,
  opensMs: row.opens_at.getTime(),
  closesMs: row.closes_at?.getTime() ?? 0,
  validUntilMs: row.valid_until?.getTime() ?? 0,
  expireAtMs: retentionDeadline(row, retentionMs),
  retentionMs,
  paused: row.paused_at !== null && row.paused_at !== undefined,
});

/** What an operator changes on an armed gate; undefined = unchanged, 0 = never for the times. */
export interface GateChange { total?: number; closesMs?: number; validUntilMs?: number; paused?: boolean; expireAtMs: number }
export type GateChangeResult =
  | { status: 'CHANGED'; accepted: number; highest: number }
  | { status: 'BELOW_ACCEPTED'; floor: number }
  | { status: 'NOT_ARMED' };

/** The gate's view of the coupon when Redis has no gate for it: from the ledger row, for redeem.lua. */
export interface WithoutGate { validUntilMs: number; deadlineMs: number }

export interface CouponScriptsOptions {
  /** Marked before each script that can add a pending reservation or an outbox entry. */
  active?: ActiveCoupons;
  /** REDIS_RETENTION in ms (default 7 days). */
  retentionMs?: number;
}

export class CouponScripts {
  private readonly redis: Redis;
  private readonly active: ActiveCoupons | undefined;
  readonly retentionMs: number;
  constructor(redis: Redis, options: CouponScriptsOptions = {}) {
    this.redis = redis;
    this.active = options.active;
    this.retentionMs = options.retentionMs ?? 7 * 86_400_000;
    for (const [name, spec] of Object.entries(SCRIPTS)) {
      redis.defineCommand(name, { numberOfKeys: spec.keys, lua: withLibs(spec.libs, luaScript(spec.file)) });
    }
  }

  /**
   * The deadline for keys written while the coupon has no gate in Redis (redemption state restored
   * from the ledger): the one arming will set, or, for a coupon already past it that someone still
   * asks about, REDIS_RETENTION from now. One value per load, so the keys of one load expire together.
   */
  deadlineWithoutGate(row: CouponRow, nowMs: number): number {
    const deadline = retentionDeadline(row, this.retentionMs);
    return deadline === 0 || deadline > nowMs ? deadline : nowMs + this.retentionMs;
  }

  private call(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    const fn = (this.redis as unknown as Record<string, Call>)[name];
    if (!fn) throw new Error(`Redis script ${name} is not defined`);
    return fn.call(this.redis, ...keys, ...args);
  }

  /**
   * Starts loading a gate (gate-load.lua): feed it the ledger in seq order with `rows`, then `arm`.
   * It holds at most one chunk of free seqs, never the coupon. `rebuild` for a rebuild after a loss:
   * it then refuses to arm over state Redis lost again meanwhile (LoadInterrupted), and, given the
   * loss marker's value the rebuild waited for, refuses to start once that marker is gone.
   */
  gateLoad(couponId: string, meta: GateMeta, rebuild?: { epoch?: string | undefined }): GateLoad {
    const k = couponKeys(couponId);
    const token = randomUUID();
    const keys = [k.meta, k.winners, k.next, k.issued, k.free, stagedFreeKey(couponId, token), loadTokenKey(couponId, 'gate', token), k.rebuildAfter, ...allCouponKeys(couponId)];
    return new GateLoad(meta, (args) => this.call('gateLoad', keys, args), rebuild);
  }

  /** Whether the coupon's sell-out is final (gate-sold-out.lua); undefined when Redis has no gate for it. */
  async gateSoldOut(couponId: string): Promise<SoldOutCheck | undefined> {
    const k = couponKeys(couponId);
    const reply = (await this.call('gateSoldOut', [k.meta, k.winners, k.pending], [])) as [string, string, number, string, string] | [];
    if (reply.length === 0) return undefined;
    const [epoch, final, winners, closesMs, expireAtMs] = reply;
    return { epoch, final: final === '1', winners: Number(winners), closesMs: Number(closesMs), expireAtMs: Number(expireAtMs) };
  }

  /**
   * An operator's change to an armed gate (gate-change.lua), atomic against reservations. Fields
   * left undefined are unchanged; `expireAtMs` is the retention deadline after the change.
   */
  async gateChange(couponId: string, change: GateChange): Promise<GateChangeResult> {
    const k = couponKeys(couponId);
    const opt = (v: number | undefined) => (v === undefined ? '' : v);
    const reply = (await this.call('gateChange', [k.meta, k.winners, k.next, ...allCouponKeys(couponId)], [
      opt(change.total), opt(change.closesMs), opt(change.validUntilMs),
      change.paused === undefined ? '' : change.paused ? '1' : '0',
      change.expireAtMs, randomUUID(),
    ])) as [string, string?, string?];
    if (reply[0] === 'CHANGED') return { status: 'CHANGED', accepted: Number(reply[1]), highest: Number(reply[2]) };
    if (reply[0] === 'BELOW_ACCEPTED') return { status: 'BELOW_ACCEPTED', floor: Number(reply[1]) };
    return { status: 'NOT_ARMED' };
  }

  /** Arms a new coupon's gate (meta last: nothing answers IssueCoupon before it). False if already armed. */
  gateArm(couponId: string, meta: GateMeta): Promise<boolean> {
    return this.gateLoad(couponId, meta).arm();
  }

  async gateReserve(couponId: string, userId: string, nowMs: number): Promise<ReserveResult> {
    const k = couponKeys(couponId);
    const keys = [k.meta, k.winners, k.next, k.free, k.pending, k.issued, k.redeem];
    const reserve = async (marked: boolean) => (await this.call('gateReserve', keys, [userId, nowMs, marked ? '1' : '0'])) as [string, string?, string?, string?];
    let reply = await reserve(!this.active || this.active.markedRecently(couponId));
    if (reply[0] === 'MARK_FIRST' && this.active) {
      // About to join the pending journal: mark the coupon active first (active-coupons.ts). Calls
      // that cannot reserve (unknown, closed, sold out, a repeat) never get here.
      await this.active.touch(couponId);
      reply = await reserve(true);
    }
    const [status, seq, third, fourth] = reply;
    if (status === 'RESERVED') return { status, seq: Number(seq), total: Number(third) };
    if (status === 'EXISTING') return { status, seq: Number(seq), state: third as 'PENDING' | 'ISSUED' | 'REDEEMED', unacked: fourth === '1' };
    return { status: status as 'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT' | 'PAUSED' };
  }

  /**
   * Drops the reservation made at `reservedAtMs` for `seq` from the pending journal, never a later
   * one of the user (gate-confirm.lua). True when it was still there.
   */
  async gateConfirm(couponId: string, userId: string, seq: number, reservedAtMs: number): Promise<boolean> {
    const k = couponKeys(couponId);
    return (await this.call('gateConfirm', [k.pending, k.winners], [userId, reservedAtMs, seq])) === 1;
  }

  /** Up to `limit` pending reservations made at or before `cutoffMs`, each with its own seq (gate-stale.lua). */
  async gateStale(couponId: string, cutoffMs: number, limit: number): Promise<StaleReservation[]> {
    const k = couponKeys(couponId);
    const flat = (await this.call('gateStale', [k.pending, k.winners], [cutoffMs, limit])) as string[];
    const out: StaleReservation[] = [];
    for (let i = 0; i < flat.length; i += 3) out.push({ userId: flat[i]!, reservedAtMs: Number(flat[i + 1]), seq: Number(flat[i + 2]) });
    return out;
  }

  /** Releases the reservation made at `reservedAtMs` after its publish failed (gate-release.lua). */
  async gateRelease(couponId: string, userId: string, seq: number, reservedAtMs: number): Promise<'RELEASED' | 'CLAIMED' | 'STALE'> {
    const k = couponKeys(couponId);
    return (await this.call('gateRelease', [k.winners, k.free, k.pending, k.released, k.claimed, k.meta], [userId, seq, reservedAtMs])) as 'RELEASED' | 'CLAIMED' | 'STALE';
  }

  /** One verdict per record, in order (issuer-claim.lua). */
  async issuerClaim(couponId: string, records: { userId: string; seq: number }[]): Promise<ClaimVerdict[]> {
    const k = couponKeys(couponId);
    const verdicts: ClaimVerdict[] = [];
    for (const part of chunks(records)) {
      const reply = (await this.call('issuerClaim', [k.meta, k.winners, k.released, k.claimed], part.flatMap((r) => [r.userId, r.seq]))) as ClaimVerdict[];
      verdicts.push(...reply);
    }
    return verdicts;
  }

  /**
   * Notes that the coupon's `state` is missing, unless it is present after all (loss-noticed.lua).
   * The first process to notice sets when a rebuild may start: noticed + `settleMs`, Redis time.
   */
  async lossNoticed(couponId: string, state: RebuiltState, settleMs: number, markerTtlMs: number): Promise<LossNoticed> {
    const k = lossKeys(couponId, state);
    const [status, after, now] = (await this.call('lossNoticed', [k.present, k.marker], [settleMs, markerTtlMs])) as [string, string?, string?];
    if (status === 'PRESENT') return { status };
    return { status: 'LOST', rebuildAfterMs: Number(after), nowMs: Number(now), marker: after ?? '' };
  }

  async issuerMarkIssued(couponId: string, rows: { userId: string; seq: number; issuedAtMs: number }[]): Promise<void> {
    const k = couponKeys(couponId);
    for (const part of chunks(rows)) {
      await this.call('issuerMarkIssued', [k.issued, k.winners, k.meta, ...allCouponKeys(couponId)], [Date.now(), ...part.flatMap((r) => [r.userId, r.seq, r.issuedAtMs])]);
    }
  }

  /**
   * RedeemCoupon's decision (redeem.lua). `withoutGate`, read from the ledger after Redis lost the
   * gate (or it expired), replaces meta's valid_until and deadline.
   */
  async redeem(couponId: string, userId: string, orderId: string, nowMs: number, withoutGate?: WithoutGate): Promise<RedemptionOutcome<RedeemStatus>> {
    const k = couponKeys(couponId);
    // Before the script: the change joins the outbox (active-coupons.ts).
    await this.active?.touch(couponId);
    const reply = await this.call('redeem', [k.meta, k.winners, k.issued, k.redeem, k.cancelled, k.outbox, k.redeemLoaded], [userId, orderId, nowMs, withoutGate?.validUntilMs ?? '', withoutGate?.deadlineMs ?? '']);
    return redemptionOutcome<RedeemStatus>(reply);
  }

  /**
   * CancelRedemption's decision (cancel-redemption.lua). `ledgerChecked` after the ledger was
   * consulted; `deadlineMs` (deadlineWithoutGate) for keys it creates while there is no gate.
   */
  async cancelRedemption(couponId: string, userId: string, orderId: string, nowMs: number, ledgerChecked: boolean, deadlineMs?: number): Promise<RedemptionOutcome<CancelStatus>> {
    const k = couponKeys(couponId);
    await this.active?.touch(couponId);
    const reply = await this.call('cancelRedemption', [k.meta, k.winners, k.issued, k.redeem, k.cancelled, k.outbox, k.redeemLoaded], [userId, orderId, nowMs, ledgerChecked ? '1' : '0', deadlineMs ?? '']);
    return redemptionOutcome<CancelStatus>(reply);
  }

  /**
   * Puts one user's ledger state back where Redis lacks it; never overwrites newer state.
   * `deadlineMs` (deadlineWithoutGate) is used while there is no gate.
   */
  async restoreRedemption(couponId: string, records: readonly LedgerRedemptionRecord[], deadlineMs?: number): Promise<number> {
    const run = this.redemptionRestorer(couponId, randomUUID());
    let written = 0;
    for (const part of chunks(records)) written += await run(['U', deadlineMs ?? '', '', ...restoreArgs(part)]);
    return written;
  }

  /**
   * Starts a whole-coupon load of redemption state from the ledger (restore-redemption.lua): feed
   * it pages with `records`, then `markLoaded`. `deadlineMs` (deadlineWithoutGate) is passed to
   * every call, so the keys of one load expire together. `epoch` is the loss marker's value the
   * load waited for. Throws LoadInterrupted, marking nothing, when Redis lost state meanwhile.
   */
  redemptionLoad(couponId: string, deadlineMs: number | undefined, epoch: string | undefined): RedemptionLoad {
    return new RedemptionLoad(this.redemptionRestorer(couponId, randomUUID()), deadlineMs ?? '', epoch ?? '');
  }

  private redemptionRestorer(couponId: string, token: string): (args: (string | number)[]) => Promise<number> {
    const k = couponKeys(couponId);
    const keys = [k.winners, k.issued, k.redeem, k.cancelled, k.redeemLoaded, k.meta, loadTokenKey(couponId, 'redemption', token), k.redeemLoadAfter];
    return async (args) => Number(await this.call('restoreRedemption', keys, args));
  }
}

/** Redis lost state while it was loaded from the ledger: nothing was armed (or marked loaded); start over. */
export class LoadInterrupted extends Error {
  constructor(what: string) {
    super(`Redis lost ${what} while it was loaded from the ledger; the load starts over`);
    this.name = 'LoadInterrupted';
  }
}

/**
 * One gate load (gate-load.lua). Rows must come in ascending seq order, as the ledger pages them;
 * the seqs between consecutive rows that no row holds (released, or never published, before the
 * loss) are sent as they are found, a chunk at a time, so nothing here grows with the coupon.
 * They go back to the pool, or the coupon could never sell its last units (I4).
 * A rebuild counts what it wrote; arming checks that Redis still holds all of it (LoadInterrupted).
 */
export class GateLoad {
  private readonly meta: GateMeta;
  private readonly run: (args: (string | number)[]) => Promise<unknown>;
  private readonly rebuild: { epoch?: string | undefined } | undefined;
  private begun = false;
  /** Rows and free seqs this rebuild has written. */
  private written = 0;
  private highest = 0;
  private gaps: number[] = [];
  private armedElsewhere = false;

  constructor(meta: GateMeta, run: (args: (string | number)[]) => Promise<unknown>, rebuild?: { epoch?: string | undefined }) {
    this.meta = meta;
    this.run = run;
    this.rebuild = rebuild;
  }

  /** Loads a page of ledger rows. False once another process has armed the gate: stop loading. */
  async rows(page: readonly LedgerRow[]): Promise<boolean> {
    if (this.armedElsewhere) return false;
    for (const part of chunks(page)) {
      if (!(await this.step(['rows', STAGED_FREE_TTL_MS, this.meta.expireAtMs, ...part.flatMap((r) => [r.userId, r.seq, r.issuedAtMs])]))) return false;
      this.written += part.length;
    }
    for (const r of page) {
      if (r.seq <= this.highest) throw new Error(`ledger rows out of seq order: ${r.seq} after ${this.highest}`);
      for (let seq = this.highest + 1; seq < r.seq; seq++) {
        this.gaps.push(seq);
        if (this.gaps.length >= CHUNK && !(await this.flushGaps())) return false;
      }
      this.highest = r.seq;
    }
    return true;
  }

  /** Writes meta last and sets every key's expiry. False if another process armed the gate first. */
  async arm(): Promise<boolean> {
    if (this.armedElsewhere || !(await this.flushGaps())) return false;
    const m = this.meta;
    return this.step(['arm', m.total, m.opensMs, m.closesMs, m.validUntilMs, this.highest, m.expireAtMs, m.retentionMs, this.rebuild ? this.written : '', randomUUID(), m.paused ? '1' : '0']);
  }

  private async flushGaps(): Promise<boolean> {
    if (this.gaps.length === 0) return true;
    const part = this.gaps;
    this.gaps = [];
    if (!(await this.step(['free', STAGED_FREE_TTL_MS, ...part]))) return false;
    this.written += part.length;
    return true;
  }

  private async step(args: (string | number)[]): Promise<boolean> {
    if (this.rebuild && !this.begun) {
      this.begun = true;
      if (!(await this.step(['begin', STAGED_FREE_TTL_MS, this.rebuild.epoch ?? '']))) return false;
    }
    const reply = Number(await this.run(args));
    if (reply === 1) return true;
    if (reply === -1) throw new LoadInterrupted("the coupon's gate state");
    this.armedElsewhere = true;
    return false;
  }
}

const restoreArgs = (records: readonly LedgerRedemptionRecord[]) =>
  records.flatMap((r) => r.kind === 'row' ? ['U', r.userId, r.seq, r.issuedAtMs, r.value, r.version] : ['X', r.userId, r.orderId]);

/**
 * One whole-coupon load of redemption state (restore-redemption.lua). It counts what it wrote, and
 * the coupon is marked loaded only if Redis still holds all of it (LoadInterrupted otherwise).
 */
export class RedemptionLoad {
  private readonly run: (args: (string | number)[]) => Promise<number>;
  private readonly deadline: number | '';
  private readonly epoch: string;
  private begun = false;
  private written = 0;

  constructor(run: (args: (string | number)[]) => Promise<number>, deadline: number | '', epoch: string) {
    this.run = run;
    this.deadline = deadline;
    this.epoch = epoch;
  }

  async records(page: readonly LedgerRedemptionRecord[]): Promise<void> {
    await this.begin();
    for (const part of chunks(page)) {
      this.check(await this.run(['C', this.deadline, STAGED_FREE_TTL_MS, ...restoreArgs(part)]));
      this.written += part.length;
    }
  }

  async markLoaded(): Promise<void> {
    await this.begin();
    this.check(await this.run(['M', this.deadline, this.written]));
  }

  private async begin(): Promise<void> {
    if (this.begun) return;
    this.begun = true;
    this.check(await this.run(['B', this.deadline, STAGED_FREE_TTL_MS, this.epoch]));
  }

  private check(reply: number): void {
    if (reply === -1) throw new LoadInterrupted("the coupon's redemption state");
  }
}

function redemptionOutcome<S extends string>(reply: unknown): RedemptionOutcome<S> {
  const [status, seq = '', issuedMs = '', value = '', ...outbox] = reply as string[];
  return { status: status as S, seq, issuedMs, value, outbox };
}
