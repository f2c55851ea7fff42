// The gate's Redis scripts (src/store/lua/gate-*.lua), typed: what each is asked and what it
// answers. Loading a gate from the ledger (gate-load.lua) is gate-load.ts.
import { randomUUID } from 'node:crypto';
import { retentionDeadline } from '../domain/retention.ts';
import type { CouponRow } from '../store/coupons.ts';
import type { CouponScripts } from '../store/scripts.ts';
import type { Redis } from '../store/redis.ts';
import { couponKeys } from '../store/keys.ts';
import { GateLoad } from './gate-load.ts';

/** The gate's meta hash (gate-load.lua writes it when it arms). */
export interface GateMeta {
  total: number; opensMs: number; closesMs: number; validUntilMs: number;
  /** When every key of the coupon expires (0 = never): domain/retention.ts retentionDeadline. */
  expireAtMs: number;
  /** REDIS_RETENTION, kept in meta for the issuer to set the deadline when the coupon completes. */
  retentionMs: number;
  /** An operator paused the coupon (coupons.paused_at): the gate takes no new winners. */
  paused?: boolean;
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

export type ReserveResult =
  | { status: 'RESERVED'; seq: number; total: number }
  | { status: 'EXISTING'; seq: number; state: 'PENDING' | 'ISSUED' | 'REDEEMED'; unacked: boolean }
  | { status: 'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT' | 'PAUSED' | 'CLOCK_BEHIND' };

/** gate-sold-out.lua's answer: the arming's epoch ('' before epochs), and whether the sell-out is final. */
export interface SoldOutCheck { epoch: string; final: boolean; winners: number; closesMs: number; expireAtMs: number }
/** What an operator changes on an armed gate; undefined = unchanged, 0 = never for the times. */
export interface GateChange { total?: number; closesMs?: number; validUntilMs?: number; paused?: boolean; expireAtMs: number }
export type GateChangeResult =
  | { status: 'CHANGED'; accepted: number; highest: number }
  | { status: 'BELOW_ACCEPTED'; floor: number }
  | { status: 'NOT_ARMED' };

/** A reservation whose publish has not been acknowledged: the user, when it was made, and the seq it holds. */
export interface StaleReservation { userId: string; reservedAtMs: number; seq: number }

/**
 * Starts loading a gate (gate-load.lua): feed it the ledger in seq order with `rows`, then `arm`.
 * It holds at most one chunk of free seqs, never the coupon. `rebuild` for a rebuild after a loss:
 * it then refuses to arm over state Redis lost again meanwhile (LoadInterrupted), and, given the
 * loss marker's value the rebuild waited for, refuses to start once that marker is gone.
 */
export function gateLoad(scripts: CouponScripts, couponId: string, meta: GateMeta, rebuild?: { epoch?: string | undefined }): GateLoad {
  const target = { couponId, token: randomUUID() };
  return new GateLoad(meta, (args) => scripts.run('gateLoad', target, args), rebuild);
}

/**
 * An operator's change to an armed gate (gate-change.lua), atomic against reservations. Fields
 * left undefined are unchanged; `expireAtMs` is the retention deadline after the change.
 */
export async function gateChange(scripts: CouponScripts, couponId: string, change: GateChange): Promise<GateChangeResult> {
  const opt = (v: number | undefined) => (v === undefined ? '' : v);
  const reply = (await scripts.run('gateChange', couponId, [
    opt(change.total), opt(change.closesMs), opt(change.validUntilMs),
    change.paused === undefined ? '' : change.paused ? '1' : '0',
    change.expireAtMs, randomUUID(),
  ])) as [string, string?, string?];
  if (reply[0] === 'CHANGED') return { status: 'CHANGED', accepted: Number(reply[1]), highest: Number(reply[2]) };
  if (reply[0] === 'BELOW_ACCEPTED') return { status: 'BELOW_ACCEPTED', floor: Number(reply[1]) };
  return { status: 'NOT_ARMED' };
}

/** Arms a new coupon's gate (meta last: nothing answers IssueCoupon before it). False if already armed. */
export function gateArm(scripts: CouponScripts, couponId: string, meta: GateMeta): Promise<boolean> {
  return gateLoad(scripts, couponId, meta).arm();
}

/** Whether the coupon's sell-out is final (gate-sold-out.lua); undefined when Redis has no gate for it. */
export async function gateSoldOut(scripts: CouponScripts, couponId: string): Promise<SoldOutCheck | undefined> {
  const reply = (await scripts.run('gateSoldOut', couponId, [])) as [string, string, number, string, string] | [];
  if (reply.length === 0) return undefined;
  const [epoch, final, winners, closesMs, expireAtMs] = reply;
  return { epoch, final: final === '1', winners: Number(winners), closesMs: Number(closesMs), expireAtMs: Number(expireAtMs) };
}

/**
 * A sold-out view's recheck in one Redis command: the same signature gate-sold-out.lua returns as
 * its epoch (epoch, last reservation, releases, joined by '#'), with the window's close and the
 * keys' deadline. Undefined when the gate has no epoch (lost, expired, or armed before epochs).
 */
export async function soldOutSignature(redis: Redis, couponId: string): Promise<{ signature: string; closesMs: number; expireAtMs: number } | undefined> {
  const [epoch, lastReserve, releases, closesMs, expireAtMs] = await redis.hmget(couponKeys(couponId).meta, 'epoch', 'last_reserve', 'releases', 'closes_ms', 'expire_at_ms');
  if (!epoch) return undefined;
  return { signature: `${epoch}#${lastReserve ?? ''}#${releases ?? ''}`, closesMs: Number(closesMs ?? 0), expireAtMs: Number(expireAtMs ?? 0) };
}

/** IssueCoupon's decision (gate-reserve.lua). */
export async function gateReserve(scripts: CouponScripts, couponId: string, userId: string, nowMs: number): Promise<ReserveResult> {
  const { active } = scripts;
  const reserve = async (marked: boolean) => (await scripts.run('gateReserve', couponId, [userId, nowMs, marked ? '1' : '0'])) as [string, string?, string?, string?];
  let reply = await reserve(!active || active.markedRecently(couponId));
  if (reply[0] === 'MARK_FIRST' && active) {
    // About to join the pending journal: mark the coupon active first (store/active-coupons.ts).
    // Calls that cannot reserve (unknown, closed, sold out, a repeat) never get here.
    await active.touch(couponId);
    reply = await reserve(true);
  }
  const [status, seq, third, fourth] = reply;
  if (status === 'RESERVED') return { status, seq: Number(seq), total: Number(third) };
  if (status === 'EXISTING') return { status, seq: Number(seq), state: third as 'PENDING' | 'ISSUED' | 'REDEEMED', unacked: fourth === '1' };
  return { status: status as 'NOT_FOUND' | 'NOT_OPEN' | 'CLOSED' | 'SOLD_OUT' | 'PAUSED' | 'CLOCK_BEHIND' };
}

/**
 * Drops the reservation made at `reservedAtMs` for `seq` from the pending journal, never a later
 * one of the user (gate-confirm.lua). True when it was still there.
 */
export async function gateConfirm(scripts: CouponScripts, couponId: string, userId: string, seq: number, reservedAtMs: number): Promise<boolean> {
  return (await gateConfirmMany(scripts, couponId, [{ userId, reservedAtMs, seq }]))[0]!;
}

/** gateConfirm for several reservations of one coupon in one script call (at most CHUNK). */
export async function gateConfirmMany(scripts: CouponScripts, couponId: string, reservations: readonly StaleReservation[]): Promise<boolean[]> {
  const args: (string | number)[] = [];
  for (const r of reservations) args.push(r.userId, r.reservedAtMs, r.seq);
  return ((await scripts.run('gateConfirm', couponId, args)) as number[]).map((removed) => removed === 1);
}

/** Up to `limit` pending reservations made at or before `cutoffMs`, each with its own seq (gate-stale.lua). */
export async function gateStale(scripts: CouponScripts, couponId: string, cutoffMs: number, limit: number): Promise<StaleReservation[]> {
  const flat = (await scripts.run('gateStale', couponId, [cutoffMs, limit])) as string[];
  const out: StaleReservation[] = [];
  for (let i = 0; i < flat.length; i += 3) out.push({ userId: flat[i]!, reservedAtMs: Number(flat[i + 1]), seq: Number(flat[i + 2]) });
  return out;
}

/** Releases the reservation made at `reservedAtMs` after its publish failed (gate-release.lua). */
export async function gateRelease(scripts: CouponScripts, couponId: string, userId: string, seq: number, reservedAtMs: number): Promise<'RELEASED' | 'CLAIMED' | 'STALE'> {
  return (await scripts.run('gateRelease', couponId, [userId, seq, reservedAtMs])) as 'RELEASED' | 'CLAIMED' | 'STALE';
}
