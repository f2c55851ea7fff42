// One load of a coupon's gate from the ledger (gate-load.lua), and the rebuild's gap rule: every seq
// below the highest one the ledger holds that no ledger row holds goes back to the free list.
import { randomUUID } from 'node:crypto';
import { LoadInterrupted } from '../domain/errors.ts';
import type { LedgerRow } from '../store/coupons.ts';
import { STAGING_TTL_MS } from '../store/keys.ts';
import { fenceBoundMs } from '../store/loss-guard.ts';
import { CHUNK, chunks, type ScriptArg } from '../store/scripts.ts';
import type { GateMeta } from './gate-scripts.ts';

/**
 * One gate load (gate-load.lua). Rows must come in ascending seq order, as the ledger pages them;
 * the seqs between consecutive rows that no row holds (released, or never published, before the
 * loss) are sent as they are found, a chunk at a time, so nothing here grows with the coupon.
 * They go back to the pool, or the coupon could never sell its last units (I4).
 * A rebuild counts what it wrote; arming checks that Redis still holds all of it (LoadInterrupted).
 */
export class GateLoad {
  private readonly meta: GateMeta;
  private readonly run: (args: ScriptArg[]) => Promise<unknown>;
  private readonly rebuild: { epoch?: string | undefined } | undefined;
  private begun = false;
  /** Rows and free seqs this rebuild has written. */
  private written = 0;
  private highest = 0;
  private gaps: number[] = [];
  private armedElsewhere = false;

  /** `run` calls gate-load.lua with these arguments, on the KEYS of one coupon and one load token. */
  constructor(meta: GateMeta, run: (args: ScriptArg[]) => Promise<unknown>, rebuild?: { epoch?: string | undefined }) {
    this.meta = meta;
    this.run = run;
    this.rebuild = rebuild;
  }

  /** Loads a page of ledger rows. False once another process has armed the gate: stop loading. */
  async rows(page: readonly LedgerRow[]): Promise<boolean> {
    if (this.armedElsewhere) return false;
    for (const part of chunks(page)) {
      if (!(await this.step(['rows', STAGING_TTL_MS, this.meta.expireAtMs, ...part.flatMap((r) => [r.userId, r.seq, r.issuedAtMs])]))) return false;
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
    return this.step(['arm', m.total, m.opensMs, m.closesMs, m.validUntilMs, this.highest, m.expireAtMs, m.retentionMs, this.rebuild ? this.written : '', randomUUID(), m.paused ? '1' : '0', fenceBoundMs(this.rebuild?.epoch)]);
  }

  private async flushGaps(): Promise<boolean> {
    if (this.gaps.length === 0) return true;
    const part = this.gaps;
    this.gaps = [];
    if (!(await this.step(['free', STAGING_TTL_MS, ...part]))) return false;
    this.written += part.length;
    return true;
  }

  private async step(args: ScriptArg[]): Promise<boolean> {
    if (this.rebuild && !this.begun) {
      this.begun = true;
      if (!(await this.step(['begin', STAGING_TTL_MS, this.rebuild.epoch ?? '']))) return false;
    }
    const reply = Number(await this.run(args));
    if (reply === 1) return true;
    if (reply === -1) throw new LoadInterrupted("the coupon's gate state");
    this.armedElsewhere = true;
    return false;
  }
}

