// The one typed wrapper over the project's Redis Lua scripts (src/store/lua/*.lua), loaded with
// ioredis defineCommand (EVALSHA, falling back to EVAL once per connection). Keys are passed in KEYS.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { couponKeys } from './keys.ts';

const lua = (name: string) => readFileSync(join(import.meta.dirname, 'lua', `${name}.lua`), 'utf8');

const SCRIPTS = {
  gateLoad: { file: 'gate-load', keys: 5 },
  gateReserve: { file: 'gate-reserve', keys: 7 },
  gateConfirm: { file: 'gate-confirm', keys: 1 },
  gateRelease: { file: 'gate-release', keys: 5 },
  issuerClaim: { file: 'issuer-claim', keys: 4 },
  issuerMarkIssued: { file: 'issuer-mark-issued', keys: 3 },
  redeem: { file: 'redeem', keys: 7 },
  cancelRedemption: { file: 'cancel-redemption', keys: 7 },
  restoreRedemption: { file: 'restore-redemption', keys: 5 },
} as const;

type ScriptName = keyof typeof SCRIPTS;

// Script calls that take many rows are split: a call's arguments are spread on the JS stack, and
// one long script would block Redis for every other caller while it runs.
const CHUNK = 1_000;
function* chunks<T>(items: readonly T[]): Generator<T[]> {
  for (let i = 0; i < items.length; i += CHUNK) yield items.slice(i, i + CHUNK);
}

type Call = (...args: (string | number)[]) => Promise<unknown>;

export type ReserveResult =
  | { status: 'RESERVED'; seq: number; total: number }
  | { status: 'EXISTING'; seq: number; state: 'PENDING' | 'ISSUED' | 'REDEEMED'; unacked: boolean }
  | { status: 'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT' };

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

export interface GateMeta { total: number; opensMs: number; closesMs: number; validUntilMs: number }

export class CouponScripts {
  private readonly redis: Redis;
  constructor(redis: Redis) {
    this.redis = redis;
    for (const [name, { file, keys }] of Object.entries(SCRIPTS)) {
      try {
        redis.defineCommand(name, { numberOfKeys: keys, lua: lua(file) });
      } catch (err) {
        // Scripts of later features may not exist yet in a partial checkout; fail on first use.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }

  private call(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    const fn = (this.redis as unknown as Record<string, Call>)[name];
    if (!fn) throw new Error(`Redis script ${name} is not defined`);
    return fn.call(this.redis, ...keys, ...args);
  }

  /** Arms the gate; `ledger` rebuilds winners and issued state from PostgreSQL rows, in chunks. */
  async gateLoad(couponId: string, meta: GateMeta, ledger: { userId: string; seq: number; issuedAtMs: number }[] = []): Promise<boolean> {
    const k = couponKeys(couponId);
    const keys = [k.meta, k.winners, k.next, k.issued, k.free];
    let maxSeq = 0;
    const held = new Set<number>();
    for (const rows of chunks(ledger)) {
      await this.call('gateLoad', keys, ['rows', ...rows.flatMap((r) => [r.userId, r.seq, r.issuedAtMs])]);
      for (const r of rows) { maxSeq = Math.max(maxSeq, r.seq); held.add(r.seq); }
    }
    // Seqs below the highest that no ledger row holds were released (or never published) before
    // the loss: they go back to the pool, or the coupon could never sell its last units (I4).
    const gaps: number[] = [];
    for (let seq = 1; seq < maxSeq; seq++) if (!held.has(seq)) gaps.push(seq);
    for (const part of chunks(gaps)) await this.call('gateLoad', keys, ['free', ...part]);
    const armed = await this.call('gateLoad', keys, ['arm', meta.total, meta.opensMs, meta.closesMs, meta.validUntilMs, maxSeq]);
    return armed === 1;
  }

  async gateReserve(couponId: string, userId: string, nowMs: number): Promise<ReserveResult> {
    const k = couponKeys(couponId);
    const [status, seq, third, fourth] = (await this.call('gateReserve', [k.meta, k.winners, k.next, k.free, k.pending, k.issued, k.redeem], [userId, nowMs])) as [string, string?, string?, string?];
    if (status === 'RESERVED') return { status, seq: Number(seq), total: Number(third) };
    if (status === 'EXISTING') return { status, seq: Number(seq), state: third as 'PENDING' | 'ISSUED' | 'REDEEMED', unacked: fourth === '1' };
    return { status: status as 'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT' };
  }

  async gateConfirm(couponId: string, userId: string): Promise<void> {
    await this.call('gateConfirm', [couponKeys(couponId).pending], [userId]);
  }

  async gateRelease(couponId: string, userId: string, seq: number): Promise<'RELEASED' | 'CLAIMED' | 'STALE'> {
    const k = couponKeys(couponId);
    return (await this.call('gateRelease', [k.winners, k.free, k.pending, k.released, k.claimed], [userId, seq])) as 'RELEASED' | 'CLAIMED' | 'STALE';
  }

  /** One verdict per record, in order: true to write it, false when it is stale. */
  async issuerClaim(couponId: string, records: { userId: string; seq: number }[]): Promise<boolean[]> {
    const k = couponKeys(couponId);
    const verdicts: boolean[] = [];
    for (const part of chunks(records)) {
      const reply = (await this.call('issuerClaim', [k.meta, k.winners, k.released, k.claimed], part.flatMap((r) => [r.userId, r.seq]))) as string[];
      for (const v of reply) verdicts.push(v === 'OK');
    }
    return verdicts;
  }

  async issuerMarkIssued(couponId: string, rows: { userId: string; seq: number; issuedAtMs: number }[]): Promise<void> {
    const k = couponKeys(couponId);
    for (const part of chunks(rows)) {
      await this.call('issuerMarkIssued', [k.issued, k.winners, k.meta], part.flatMap((r) => [r.userId, r.seq, r.issuedAtMs]));
    }
  }

  /** RedeemCoupon's decision (redeem.lua). `validUntilMs` replaces meta's after Redis lost it. */
  async redeem(couponId: string, userId: string, orderId: string, nowMs: number, validUntilMs?: number): Promise<RedemptionOutcome<RedeemStatus>> {
    const k = couponKeys(couponId);
    const reply = await this.call('redeem', [k.meta, k.winners, k.issued, k.redeem, k.cancelled, k.outbox, k.redeemLoaded], [userId, orderId, nowMs, validUntilMs ?? '']);
    return redemptionOutcome<RedeemStatus>(reply);
  }

  /** CancelRedemption's decision (cancel-redemption.lua). `ledgerChecked` after the ledger was consulted. */
  async cancelRedemption(couponId: string, userId: string, orderId: string, nowMs: number, ledgerChecked: boolean): Promise<RedemptionOutcome<CancelStatus>> {
    const k = couponKeys(couponId);
    const reply = await this.call('cancelRedemption', [k.meta, k.winners, k.issued, k.redeem, k.cancelled, k.outbox, k.redeemLoaded], [userId, orderId, nowMs, ledgerChecked ? '1' : '0']);
    return redemptionOutcome<CancelStatus>(reply);
  }

  /**
   * Puts ledger state back where Redis lost it, in chunks; never overwrites newer state. With
   * `markLoaded` (a whole-coupon load) the coupon is marked loaded after the last chunk.
   */
  async restoreRedemption(couponId: string, records: LedgerRedemptionRecord[], markLoaded: boolean): Promise<number> {
    const k = couponKeys(couponId);
    const keys = [k.winners, k.issued, k.redeem, k.cancelled, k.redeemLoaded];
    let written = 0;
    for (const part of chunks(records)) {
      const args = part.flatMap((r) => r.kind === 'row' ? ['U', r.userId, r.seq, r.issuedAtMs, r.value, r.version] : ['X', r.userId, r.orderId]);
      written += Number(await this.call('restoreRedemption', keys, ['0', ...args]));
    }
    if (markLoaded) await this.call('restoreRedemption', keys, ['1']);
    return written;
  }
}

function redemptionOutcome<S extends string>(reply: unknown): RedemptionOutcome<S> {
  const [status, seq = '', issuedMs = '', value = '', ...outbox] = reply as string[];
  return { status: status as S, seq, issuedMs, value, outbox };
}
