// The one typed wrapper over the project's Redis Lua scripts (src/store/lua/*.lua), loaded with
// ioredis defineCommand (EVALSHA, falling back to EVAL once per connection). Keys are passed in KEYS.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { couponKeys } from './keys.ts';

const lua = (name: string) => readFileSync(join(import.meta.dirname, 'lua', `${name}.lua`), 'utf8');

const SCRIPTS = {
  gateLoad: { file: 'gate-load', keys: 4 },
  gateReserve: { file: 'gate-reserve', keys: 7 },
  gateConfirm: { file: 'gate-confirm', keys: 1 },
  gateRelease: { file: 'gate-release', keys: 5 },
  issuerClaim: { file: 'issuer-claim', keys: 4 },
  issuerMarkIssued: { file: 'issuer-mark-issued', keys: 3 },
  redeem: { file: 'redeem', keys: 4 },
  cancelRedemption: { file: 'cancel-redemption', keys: 3 },
  restoreRedemption: { file: 'restore-redemption', keys: 3 },
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
    const keys = [k.meta, k.winners, k.next, k.issued];
    let maxSeq = 0;
    for (const rows of chunks(ledger)) {
      await this.call('gateLoad', keys, ['rows', ...rows.flatMap((r) => [r.userId, r.seq, r.issuedAtMs])]);
      for (const r of rows) maxSeq = Math.max(maxSeq, r.seq);
    }
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

  /** Raw access for the redemption scripts, which own their own argument shapes. */
  run(name: 'redeem' | 'cancelRedemption' | 'restoreRedemption', keys: string[], args: (string | number)[]): Promise<unknown> {
    return this.call(name, keys, args);
  }
}
