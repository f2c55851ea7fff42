// Redemption's Redis scripts (src/store/lua/redeem.lua, cancel-redemption.lua,
// restore-redemption.lua), typed: RedeemCoupon's and CancelRedemption's decisions, and putting the
// ledger's redemption state back into Redis.
import { randomUUID } from 'node:crypto';
import { LoadInterrupted } from '../domain/errors.ts';
import { STAGING_TTL_MS } from '../store/keys.ts';
import { fenceBoundMs } from '../store/loss-guard.ts';
import { chunks, type CouponScripts, type ScriptArg } from '../store/scripts.ts';

/**
 * What a redemption script saw and did: `value` is the user's redemption field after the call
 * ("<R|C>|<order id>|<version>|<at ms>", '' when none), and `outbox` this user's journaled changes
 * whose events Kafka has not acknowledged yet (on answers that may be OK).
 */
export interface RedemptionOutcome<S extends string> { status: S; seq: string; issuedMs: string; value: string; outbox: string[] }

export type RedeemStatus = 'REDEEMED' | 'UNCHANGED' | 'ALREADY_REDEEMED' | 'CANCELLED' | 'EXPIRED' | 'MISSING' | 'NO_META' | 'UNLOADED' | 'CLOCK_BEHIND';
export type CancelStatus = 'CANCELLED' | 'RECORDED' | 'UNCHANGED' | 'ORDER_MISMATCH' | 'MISSING' | 'NO_META' | 'UNLOADED' | 'CLOCK_BEHIND';

/** Redemption state as the ledger holds it, for restoreRedemption: a user's row, or a cancelled order. */
export type LedgerRedemptionRecord =
  | { kind: 'row'; userId: string; seq: number; issuedAtMs: number; value: string; version: number }
  | { kind: 'cancelled'; userId: string; orderId: string };

/** The gate's view of the coupon when Redis has no gate for it: from the ledger row, for redeem.lua. */
export interface WithoutGate { validUntilMs: number; deadlineMs: number }

/**
 * RedeemCoupon's decision (redeem.lua). `withoutGate`, read from the ledger after Redis lost the
 * gate (or it expired), replaces meta's valid_until and deadline.
 */
export async function redeem(scripts: CouponScripts, couponId: string, userId: string, orderId: string, nowMs: number, withoutGate?: WithoutGate): Promise<RedemptionOutcome<RedeemStatus>> {
  // Before the script: the change joins the outbox (store/active-coupons.ts).
  await scripts.active?.touch(couponId);
  const reply = await scripts.run('redeem', couponId, [userId, orderId, nowMs, withoutGate?.validUntilMs ?? '', withoutGate?.deadlineMs ?? '']);
  return redemptionOutcome<RedeemStatus>(reply);
}

/**
 * CancelRedemption's decision (cancel-redemption.lua). `ledgerChecked` after the ledger was
 * consulted; `deadlineMs` (domain/retention.ts deadlineWithoutGate) for keys it creates while there
 * is no gate.
 */
export async function cancelRedemption(scripts: CouponScripts, couponId: string, userId: string, orderId: string, nowMs: number, ledgerChecked: boolean, deadlineMs?: number): Promise<RedemptionOutcome<CancelStatus>> {
  await scripts.active?.touch(couponId);
  const reply = await scripts.run('cancelRedemption', couponId, [userId, orderId, nowMs, ledgerChecked ? '1' : '0', deadlineMs ?? '']);
  return redemptionOutcome<CancelStatus>(reply);
}

/**
 * Puts one user's ledger state back where Redis lacks it; never overwrites newer state.
 * `deadlineMs` (deadlineWithoutGate) is used while there is no gate.
 */
export async function restoreRedemption(scripts: CouponScripts, couponId: string, records: readonly LedgerRedemptionRecord[], deadlineMs?: number): Promise<number> {
  const run = restorer(scripts, couponId);
  let written = 0;
  for (const part of chunks(records)) written += await run(['U', deadlineMs ?? '', '', ...restoreArgs(part)]);
  return written;
}

/**
 * Starts a whole-coupon load of redemption state from the ledger (restore-redemption.lua): feed
 * it pages with `records`, then `markLoaded`. `deadlineMs` (deadlineWithoutGate) is passed to
 * every call, so the keys of one load expire together. `epoch` is the loss marker's value the
 * load waited for; the loaded state refuses changes whose time is before its fence's bound
 * (fenceBoundMs: the change floor, restore-redemption.lua 'M'). Throws LoadInterrupted, marking
 * nothing, when Redis lost state meanwhile.
 */
export function redemptionLoad(scripts: CouponScripts, couponId: string, deadlineMs: number | undefined, epoch: string | undefined): RedemptionLoad {
  return new RedemptionLoad(restorer(scripts, couponId), deadlineMs ?? '', epoch ?? '');
}

/** restore-redemption.lua on the KEYS of one coupon and a token of its own. */
function restorer(scripts: CouponScripts, couponId: string): (args: ScriptArg[]) => Promise<number> {
  const target = { couponId, token: randomUUID() };
  return async (args) => Number(await scripts.run('restoreRedemption', target, args));
}

const restoreArgs = (records: readonly LedgerRedemptionRecord[]) =>
  records.flatMap((r) => r.kind === 'row' ? ['U', r.userId, r.seq, r.issuedAtMs, r.value, r.version] : ['X', r.userId, r.orderId]);

/**
 * One whole-coupon load of redemption state (restore-redemption.lua). It counts what it wrote, and
 * the coupon is marked loaded only if Redis still holds all of it (LoadInterrupted otherwise).
 */
export class RedemptionLoad {
  private readonly run: (args: ScriptArg[]) => Promise<number>;
  private readonly deadline: number | '';
  private readonly epoch: string;
  private begun = false;
  private written = 0;

  constructor(run: (args: ScriptArg[]) => Promise<number>, deadline: number | '', epoch: string) {
    this.run = run;
    this.deadline = deadline;
    this.epoch = epoch;
  }

  async records(page: readonly LedgerRedemptionRecord[]): Promise<void> {
    await this.begin();
    for (const part of chunks(page)) {
      this.check(await this.run(['C', this.deadline, STAGING_TTL_MS, ...restoreArgs(part)]));
      this.written += part.length;
    }
  }

  async markLoaded(): Promise<void> {
    await this.begin();
    this.check(await this.run(['M', this.deadline, this.written, fenceBoundMs(this.epoch) || '']));
  }

  private async begin(): Promise<void> {
    if (this.begun) return;
    this.begun = true;
    this.check(await this.run(['B', this.deadline, STAGING_TTL_MS, this.epoch]));
  }

  private check(reply: number): void {
    if (reply === -1) throw new LoadInterrupted("the coupon's redemption state");
  }
}

function redemptionOutcome<S extends string>(reply: unknown): RedemptionOutcome<S> {
  const [status, seq = '', issuedMs = '', value = '', ...outbox] = reply as string[];
  return { status: status as S, seq, issuedMs, value, outbox };
}
