// fast-check commands over the real CouponService (test/model/system.ts), each checked against the
// model (test/model/model.ts) after it runs. Shared by test/model/model.test.ts (a short seeded run
// and the replayed regressions) and `npm run model` (test/model/run.ts).
import { randomBytes } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { timestampDate, timestampFromDate, TimestampSchema, type Timestamp } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { CouponStatus as PbCouponStatus, UserCouponState, type Coupon as PbCoupon, type UserCoupon } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';
import {
  applyIssues, applyRedemptions, applyRelease, couponStatuses, describeHeard, GATE_LOCAL_RECHECK_MS, highestWinnerSeq, INVALID, issueAllowed, matches, newModel, NOT_FOUND,
  redemptionOutcomes, redemptionStateOf, sameMoments, settledUserCoupon, SLACK_MS, staleRefusalOfLateWinner, winnerStates,
  type CouponStatus, type Heard, type Model, type ModelCoupon, type RedemptionOp, type Span, type UserState,
} from './model.ts';
import type { System } from './system.ts';
import { couponKeys } from '../../src/store/keys.ts';

export interface Real { sys: System; m: Model }
export type Cmd = fc.AsyncCommand<Model, Real>;

/** What the commands may use. `caseVariants`: spell coupon ids in upper and mixed case too. */
export interface CommandOptions { caseVariants: boolean; faults: boolean }

export const USERS = ['alice', 'Alice', 'bob', 'BOB', 'carol'] as const;
export const ORDERS = ['o1', 'O1', 'o2', 'o3'] as const;
const user = (m: Model, name: string) => `${m.tag}.${name}`;
const order = (m: Model, name: string) => `${m.tag}.${name}`;
/** A user name, or "winner:k": the coupon's k-th winner by seq (mod their number), so redemptions mostly meet issued coupons. */
function who(m: Model, c: ModelCoupon, name: string): string {
  const k = /^winner:(\d+)$/.exec(name);
  if (!k) return user(m, name);
  const winners = [...c.winners].sort((a, b) => a[1] - b[1]).map(([u]) => u);
  return winners.length > 0 ? winners[Number(k[1]) % winners.length]! : user(m, 'alice');
}

/** The model's view lags nothing: a settled read must match within this. */
const SETTLE_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Divergence extends Error { override name = 'Divergence'; }
const diverged = (cmd: string, what: string) => new Divergence(`${cmd}: ${what}`);

// ---------------------------------------------------------------------------------------------
// Spelling coupon ids.

export type Spelling = 'lower' | 'upper' | { mixed: number };
export function spell(id: string, how: Spelling): string {
  if (how === 'lower') return id;
  if (how === 'upper') return id.toUpperCase();
  let bit = 0;
  return [...id].map((ch) => (/[a-f]/.test(ch) ? ((how.mixed >> (bit++ % 31)) & 1 ? ch.toUpperCase() : ch) : ch)).join('');
}
const showSpelling = (s: Spelling) => (typeof s === 'string' ? s : `mixed:${s.mixed}`);

const couponOf = (m: Model, index: number): ModelCoupon => m.coupons[index % m.coupons.length]!;
const couponName = (m: Model, index: number) => `c${index % Math.max(1, m.coupons.length)}`;

// ---------------------------------------------------------------------------------------------
// Calling.

const STATE: Record<number, UserState> = {
  [UserCouponState.NOT_REQUESTED]: 'NOT_REQUESTED', [UserCouponState.PENDING]: 'PENDING',
  [UserCouponState.ISSUED]: 'ISSUED', [UserCouponState.REDEEMED]: 'REDEEMED',
};
const COUPON_STATUS: Record<number, string> = {
  [PbCouponStatus.SCHEDULED]: 'SCHEDULED', [PbCouponStatus.OPEN]: 'OPEN', [PbCouponStatus.SOLD_OUT]: 'SOLD_OUT',
  [PbCouponStatus.CLOSED]: 'CLOSED', [PbCouponStatus.COMPLETE]: 'COMPLETE', [PbCouponStatus.PAUSED]: 'PAUSED', [PbCouponStatus.EXPIRED]: 'EXPIRED',
};

/**
 * One call's answer. `released`: attempts before it that may each have been a reservation the gate
 * released (one given up on a transport failure, or answered PUBLISH_FAILED and retried).
 * `metadata`: the ErrorDetail's metadata of a refusal.
 */
interface Called<T> { heard: Heard; res?: T; span: Span; retried: boolean; released: number; metadata?: Record<string, string> }

/** Commands run and answers heard, for the long form's summary. */
export const tally = new Map<string, number>();
const bump = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);

/**
 * One call, as a caller makes it. A failure below the RPC layer (UNAVAILABLE without a reason: the
 * connection to a killed worker; DEADLINE_EXCEEDED on this overloaded machine) is retried with the
 * same request: every CouponService call is idempotent (per user, per order, or a read), so the
 * answer that comes is the one the model judges, and the tally counts the retries.
 */
async function call<T>(fn: () => Promise<T>, toHeard: (res: T) => Heard = () => ({ ok: true })): Promise<Called<T>> {
  const t0 = Date.now();
  const deadline = t0 + 60_000;
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fn();
      bump('answer OK');
      return { heard: toHeard(res), res, span: { t0, t1: Date.now() }, retried: attempt > 0, released: attempt };
    } catch (err) {
      if (!(err instanceof CouponCallError)) throw err;
      const transport = err.code === grpc.status.DEADLINE_EXCEEDED || (err.code === grpc.status.UNAVAILABLE && err.reason === '');
      if (transport && Date.now() < deadline) {
        bump(`retried ${grpc.status[err.code]} without a reason (transport)`);
        await sleep(200);
        continue;
      }
      bump(`answer ${grpc.status[err.code]} ${err.reason}`);
      return { heard: { ok: false, code: err.code, reason: err.reason, field: err.field }, span: { t0, t1: Date.now() }, retried: attempt > 0, released: attempt, metadata: err.detail?.metadata };
    }
  }
}

/**
 * After a Redis flush the gate and the redemption state are rebuilt from the ledger: until then a
 * call answers UNAVAILABLE BACKEND_UNAVAILABLE, and the caller retries (README, "Redis lost its
 * state"); never allowed otherwise. PUBLISH_FAILED says "retry" too (an IssueCoupon's slot was
 * released; a redemption's change is held and the retry completes it): on this loaded machine Kafka
 * may miss PUBLISH_TIMEOUT_MS now and then, so a caller retries it, and the tally counts it.
 */
async function settled<T>(m: Model, fn: () => Promise<Called<T>>, retryPublishFailed = true): Promise<Called<T>> {
  const deadline = Date.now() + 90_000;
  let t0: number | undefined;
  let released = 0;
  for (;;) {
    const c = await fn();
    t0 ??= c.span.t0;
    released += c.released;
    const rebuilding = !c.heard.ok && c.heard.code === grpc.status.UNAVAILABLE && c.heard.reason === 'BACKEND_UNAVAILABLE' && m.flushed;
    const publishFailed = !c.heard.ok && c.heard.code === grpc.status.UNAVAILABLE && c.heard.reason === 'PUBLISH_FAILED' && retryPublishFailed;
    if ((!rebuilding && !publishFailed) || Date.now() > deadline) return { ...c, span: { t0, t1: c.span.t1 }, retried: c.retried || t0 !== c.span.t0, released };
    if (publishFailed) released++;
    if (publishFailed) bump('retried PUBLISH_FAILED (Kafka slow, no fault injected)');
    await sleep(200);
  }
}

const userCouponHeard = (uc: UserCoupon | undefined): Heard => ({ ok: true, seq: Number(uc?.seq ?? -1n), state: STATE[uc?.state ?? 0], orderId: uc?.orderId });
const moments = (uc: UserCoupon) => ({
  state: STATE[uc.state], orderId: uc.orderId,
  issuedAtMs: uc.issuedAt ? timestampDate(uc.issuedAt).getTime() : null, redeemedAtMs: uc.redeemedAt ? timestampDate(uc.redeemedAt).getTime() : null,
});

function expectUserCouponNames(cmd: string, uc: UserCoupon | undefined, c: ModelCoupon, userId: string) {
  if (!uc) throw diverged(cmd, 'OK without user_coupon');
  if (uc.couponId !== c.id) throw diverged(cmd, `user_coupon.coupon_id is ${JSON.stringify(uc.couponId)}, not the canonical ${c.id}`);
  if (uc.userId !== userId) throw diverged(cmd, `user_coupon.user_id is ${JSON.stringify(uc.userId)}, not ${JSON.stringify(userId)}`);
}

/** Polls `read` until `judge` says done (undefined); a hard problem fails at once, a soft one after SETTLE_MS. */
async function untilSettled(cmd: string, read: () => Promise<{ hard?: string; soft?: string }>): Promise<void> {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const { hard, soft } = await read();
    if (hard) throw diverged(cmd, hard);
    if (!soft) return;
    if (Date.now() > deadline) throw diverged(cmd, `not settled within ${SETTLE_MS} ms: ${soft}`);
    await sleep(150);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks of reads against the model, shared by the read commands and the end-of-run check.

/** Waits until the ledger has every winner of `c` (the issuer caught up); no-op while it is paused. */
async function awaitIssued(r: Real, c: ModelCoupon): Promise<void> {
  if (r.m.issuerPaused) return;
  for (const [u] of c.winners) {
    if (c.issued.has(u)) continue;
    await untilSettled(`waiting for ${u} ISSUED`, async () => {
      const got = await call(() => r.sys.storefront.getUserCoupon({ couponId: c.id, userId: u }), (res) => userCouponHeard(res.userCoupon));
      if (!got.heard.ok) {
        // After a flush a read first reloads what its answer rests on (docs/api.md, GetUserCoupon).
        const rebuilding = got.heard.code === grpc.status.UNAVAILABLE && got.heard.reason === 'BACKEND_UNAVAILABLE' && r.m.flushed;
        return rebuilding ? { soft: 'UNAVAILABLE while rebuilding' } : { hard: `GetUserCoupon answered ${describeHeard(got.heard)}` };
      }
      return got.heard.state === 'PENDING' ? { soft: 'still PENDING' } : {};
    });
    c.issued.add(u);
  }
}

const msOf = (t: Timestamp | undefined) => (t ? timestampDate(t).getTime() : null);
const usOf = (t: Timestamp | undefined) => (t ? Number(t.seconds) * 1_000_000 + Math.floor(t.nanos / 1_000) : 0);
const timestampOfUs = (us: number): Timestamp => create(TimestampSchema, { seconds: BigInt(Math.floor(us / 1_000_000)), nanos: (us % 1_000_000) * 1_000 });
const showMs = (ms: number | null) => (ms === null ? 'unset' : new Date(ms).toISOString());

/**
 * A Coupon message against the model: hard for what is wrong whenever it was read, soft for what
 * may still be catching up (the gate's count while a flushed gate is rebuilt, unless `exactAccepted`;
 * the ledger's issued count while the issuer writes).
 */
function judgeCoupon(m: Model, c: ModelCoupon, p: PbCoupon, span: Span, exactAccepted: boolean): { hard?: string; soft?: string } {
  const w = c.winners.size;
  const accepted = Number(p.acceptedCount);
  const issued = Number(p.issuedCount);
  const status = COUPON_STATUS[p.status] ?? `?${p.status}`;
  const pausedAt = msOf(p.pausedAt);
  const seen = `id=${p.id} name=${JSON.stringify(p.name)} total=${p.totalQuantity} accepted=${accepted} issued=${issued} remaining=${p.remaining} status=${status} paused_at=${showMs(pausedAt)}`;
  const want = `model: name=${JSON.stringify(c.name)} total=${c.total} winners=${w} known issued=${c.issued.size} paused_at=${showMs(c.pausedAtMs)}`;
  if (p.id !== c.id) return { hard: `id ${p.id} is not the canonical ${c.id}` };
  if (p.name !== c.name || Number(p.totalQuantity) !== c.total || accepted > w || issued > accepted || issued < c.issued.size) return { hard: `${seen}; ${want}` };
  if (pausedAt !== c.pausedAtMs) return { hard: `${seen}; ${want}` };
  if (msOf(p.opensAt) !== c.opensAtMs || msOf(p.closesAt) !== c.closesAtMs || msOf(p.validUntil) !== c.validUntilMs) {
    return { hard: `opens_at ${showMs(msOf(p.opensAt))} closes_at ${showMs(msOf(p.closesAt))} valid_until ${showMs(msOf(p.validUntil))}; model ${showMs(c.opensAtMs)} ${showMs(c.closesAtMs)} ${showMs(c.validUntilMs)}` };
  }
  if (Number(p.remaining) !== c.total - accepted) return { hard: `${seen}: remaining is not total - accepted` };
  if (!couponStatuses(c, accepted, issued, span).includes(status as never)) return { hard: `${seen}: status not one of ${couponStatuses(c, accepted, issued, span).join('|')}` };
  // Accepted is read from the gate: exact at once, except while a flushed gate is rebuilt.
  if (accepted < w && exactAccepted) return { hard: `${seen}; ${want}` };
  if (accepted < w) return { soft: `${seen}; ${want}` };
  if (issued < w && !m.issuerPaused) return { soft: `${seen}; ${want}` };
  return {};
}

export async function checkCoupon(r: Real, c: ModelCoupon, spelled: string, cmd: string): Promise<void> {
  const m = r.m;
  let first = true;
  await untilSettled(cmd, async () => {
    const got = await call(() => r.sys.operator.getCoupon({ couponId: spelled }));
    if (!got.heard.ok) return { hard: `answered ${describeHeard(got.heard)}` };
    const verdict = judgeCoupon(m, c, got.res!.coupon!, got.span, first && !m.flushed);
    first = false;
    return verdict;
  });
  if (!m.issuerPaused) for (const u of c.winners.keys()) c.issued.add(u);
}

/**
 * ListCoupons, every page, as an operator, from the run's first coupon on (created_since: cheap,
 * and the other runs' and tests' coupons stay out but for the few created meanwhile, which are
 * skipped): each of the model's coupons once, newest created first, judged as GetCoupon is; with a
 * status filter, only coupons of that status, and every coupon that can only have it.
 */
export async function checkCouponList(r: Real, pageSize: number, status: CouponStatus | undefined, cmd: string): Promise<void> {
  const m = r.m;
  if (m.coupons.length === 0) return;
  const since = Math.min(...m.coupons.map((c) => c.createdAtUs));
  let first = true;
  await untilSettled(cmd, async () => {
    const listed: { c: ModelCoupon; p: PbCoupon; span: Span }[] = [];
    let token = '';
    const t0 = Date.now();
    for (let page = 0; ; page++) {
      if (page > 500) return { hard: 'more than 500 pages' };
      const got = await call(() => r.sys.operator.listCoupons({ pageSize, pageToken: token, createdSince: timestampOfUs(since), status: status ? PbCouponStatus[status] : PbCouponStatus.UNSPECIFIED }));
      if (!got.heard.ok) return { hard: `page ${page} answered ${describeHeard(got.heard)}` };
      const res = got.res!;
      if (res.coupons.length > pageSize) return { hard: `page ${page} has ${res.coupons.length} coupons, page_size ${pageSize}` };
      for (const p of res.coupons) {
        if (usOf(p.createdAt) < since) return { hard: `listed ${p.id}, created ${usOf(p.createdAt)} µs, before created_since ${since}` };
        if (status && COUPON_STATUS[p.status] !== status) return { hard: `listed ${p.id} with status ${COUPON_STATUS[p.status]}, filter ${status}` };
        const c = m.coupons.find((x) => x.id === p.id);
        if (c) listed.push({ c, p, span: got.span });
      }
      token = res.nextPageToken;
      if (!token) break;
    }
    const span = { t0, t1: Date.now() };
    const order = listed.map((x) => x.c.id);
    if (new Set(order).size !== order.length) return { hard: `a coupon listed twice: ${order.join(', ')}` };
    const newestFirst = [...listed].sort((a, b) => b.c.createdAtUs - a.c.createdAtUs || (a.c.id < b.c.id ? 1 : -1)).map((x) => x.c.id);
    if (order.join() !== newestFirst.join()) return { hard: `not newest created first: ${order.join(', ')}` };
    let soft: string | undefined;
    for (const x of listed) {
      const verdict = judgeCoupon(m, x.c, x.p, x.span, first && !m.flushed);
      if (verdict.hard) return { hard: `${x.c.id}: ${verdict.hard}` };
      soft ??= verdict.soft && `${x.c.id}: ${verdict.soft}`;
    }
    for (const c of m.coupons) {
      if (order.includes(c.id)) continue;
      if (!status) return { hard: `${c.id} not listed` };
      // Settled counts: the gate has every winner, and the ledger too unless the issuer is paused.
      const statuses = couponStatuses(c, c.winners.size, m.issuerPaused ? c.issued.size : c.winners.size, span);
      if (statuses.length === 1 && statuses[0] === status) soft ??= `${c.id} (${status} by the model) not listed`;
    }
    first = false;
    return soft ? { soft } : {};
  });
}

export async function checkUserCoupon(r: Real, c: ModelCoupon, spelled: string, userId: string, cmd: string): Promise<void> {
  const m = r.m;
  const seq = c.winners.get(userId);
  await untilSettled(cmd, async () => {
    const got = await call(() => r.sys.storefront.getUserCoupon({ couponId: spelled, userId }), (res) => userCouponHeard(res.userCoupon));
    if (!got.heard.ok) {
      // After a flush a read rebuilds the coupon first, as IssueCoupon does (docs/api.md, GetUserCoupon).
      const rebuilding = got.heard.code === grpc.status.UNAVAILABLE && got.heard.reason === 'BACKEND_UNAVAILABLE' && m.flushed;
      return rebuilding ? { soft: `answered ${describeHeard(got.heard)} while rebuilding` } : { hard: `answered ${describeHeard(got.heard)}` };
    }
    expectUserCouponNames(cmd, got.res!.userCoupon, c, userId);
    const h = got.heard;
    const want = settledUserCoupon(c, userId);
    const seen = `${describeHeard(h)}; model: ${JSON.stringify(want)}${seq !== undefined && !c.issued.has(userId) ? ' (may be PENDING)' : ''}`;
    if (seq === undefined) return h.seq === 0 && h.state === 'NOT_REQUESTED' ? {} : { hard: seen };
    if (h.seq !== seq || h.state === 'NOT_REQUESTED') return { hard: seen };
    // A read after a flush reloads the redemption state before it answers: never the ledger's lag.
    const now: UserState[] = winnerStates(c, userId);
    if (!now.includes(h.state!)) return { hard: seen };
    if (h.state === 'PENDING') return m.issuerPaused ? {} : { soft: seen };
    if (h.state !== want.state || h.orderId !== want.orderId) return m.flushed ? { soft: seen } : { hard: seen };
    const moved = sameMoments(c, userId, moments(got.res!.userCoupon!));
    return moved ? { hard: moved } : {};
  });
  if (seq !== undefined && !m.issuerPaused) c.issued.add(userId);
}

/** ListUserCoupons, every page: the user's issued coupons of this run, newest issued first. */
export async function checkList(r: Real, userId: string, pageSize: number, cmd: string): Promise<void> {
  const m = r.m;
  await untilSettled(cmd, async () => {
    const seen: { couponId: string; seq: number; state: UserState; orderId: string; issuedAt: number; uc: UserCoupon }[] = [];
    let token = '';
    for (let page = 0; ; page++) {
      if (page > 100) return { hard: 'more than 100 pages' };
      const got = await call(() => r.sys.storefront.listUserCoupons({ userId, pageSize, pageToken: token }));
      if (!got.heard.ok) return { hard: `page ${page} answered ${describeHeard(got.heard)}` };
      const res = got.res!;
      if (res.userCoupons.length > pageSize) return { hard: `page ${page} has ${res.userCoupons.length} entries, page_size ${pageSize}` };
      for (const uc of res.userCoupons) {
        if (uc.userId !== userId) return { hard: `an entry of user ${uc.userId}` };
        seen.push({ couponId: uc.couponId, seq: Number(uc.seq), state: STATE[uc.state]!, orderId: uc.orderId, issuedAt: uc.issuedAt ? timestampDate(uc.issuedAt).getTime() : NaN, uc });
      }
      token = res.nextPageToken;
      if (!token) break;
      if (res.userCoupons.length === 0) return { hard: `page ${page} is empty but has a next_page_token` };
    }
    const listed = seen.map((s) => `${s.couponId}:${s.seq}:${s.state}:${s.orderId}`).join(', ');
    const ids = seen.map((s) => s.couponId);
    if (new Set(ids).size !== ids.length) return { hard: `a coupon listed twice: ${listed}` };
    for (let i = 1; i < seen.length; i++) if (!(seen[i - 1]!.issuedAt >= seen[i]!.issuedAt)) return { hard: `not newest issued first: ${listed}` };
    const expected: string[] = [];
    for (const s of seen) {
      const c = m.coupons.find((x) => x.id === s.couponId);
      if (!c || c.winners.get(userId) !== s.seq || (s.state !== 'ISSUED' && s.state !== 'REDEEMED')) return { hard: `listed ${s.couponId}:${s.seq}:${s.state}, which the model does not have: ${listed}` };
    }
    for (const c of m.coupons) {
      const want = settledUserCoupon(c, userId);
      if (want.state === 'NOT_REQUESTED') continue;
      const s = seen.find((x) => x.couponId === c.id);
      if (!s) {
        if (c.issued.has(userId) || !m.issuerPaused) expected.push(`${c.id}:${want.seq} missing`);
        continue;
      }
      // The ledger's redemption columns follow the redemption topic: eventually exact. Its consumer
      // runs in coupon-issuer's process, so while that is paused they may still show any earlier
      // redemption state of the user's coupon: not redeemed, or redeemed for an order it had.
      const lagging = m.issuerPaused && (s.state === 'ISSUED' ? s.orderId === '' : s.orderId === c.redeemed.get(userId) || c.cancelled.get(userId)?.has(s.orderId) === true);
      if ((s.state !== want.state || s.orderId !== want.orderId) && !lagging) expected.push(`${c.id}: ${s.state} ${s.orderId}, model ${want.state} ${want.orderId}`);
      else {
        const moved = sameMoments(c, userId, moments(s.uc));
        if (moved) return { hard: `${c.id}: ${moved}` };
      }
    }
    return expected.length ? { soft: `${expected.join('; ')}; listed: ${listed || '(none)'}` } : {};
  });
}

/** End of a run: the issuer resumed, everything settled, every read equal to the model. */
export async function finalCheck(r: Real): Promise<void> {
  if (r.sys.issuerPaused) r.sys.resumeIssuer();
  r.m.issuerPaused = false;
  for (const c of r.m.coupons) {
    await checkCoupon(r, c, c.id, `final GetCoupon(${c.id})`);
    for (const name of USERS) await checkUserCoupon(r, c, c.id, user(r.m, name), `final GetUserCoupon(${c.id}, ${name})`);
  }
  for (const name of USERS) await checkList(r, user(r.m, name), 2, `final ListUserCoupons(${name})`);
  await checkCouponList(r, 50, undefined, 'final ListCoupons');
}

/** Before each run: no fault left over from a failed one. */
export function resetSystem(sys: System): void {
  if (sys.issuerPaused) sys.resumeIssuer();
  sys.proxy.hold(false);
  sys.proxy.release();
}

export const newRun = (sys: System): { model: Model; real: Real } => {
  resetSystem(sys);
  const model = newModel(`m${randomBytes(3).toString('hex')}`);
  return { model, real: { sys, m: model } };
};

// ---------------------------------------------------------------------------------------------
// The commands.

export class CreateCoupon implements Cmd {
  readonly total: number;
  readonly opensInMs: number;
  readonly closesAfterMs: number | null;
  readonly validAfterMs: number | null;
  constructor(total: number, opensInMs: number, closesAfterMs: number | null, validAfterMs: number | null) { this.total = total; this.opensInMs = opensInMs; this.closesAfterMs = closesAfterMs; this.validAfterMs = validAfterMs; }
  check() { return true; }
  async run(m: Model, r: Real) {
    const now = Date.now();
    const opensAtMs = now + this.opensInMs;
    const closesAtMs = this.closesAfterMs === null ? null : opensAtMs + this.closesAfterMs;
    const validUntilMs = this.validAfterMs === null ? null : (closesAtMs ?? opensAtMs) + this.validAfterMs;
    const name = `model ${m.tag} c${m.coupons.length}`;
    const got = await call(() => r.sys.operator.createCoupon({
      name, totalQuantity: BigInt(this.total), opensAt: timestampFromDate(new Date(opensAtMs)),
      closesAt: closesAtMs === null ? undefined : timestampFromDate(new Date(closesAtMs)),
      validUntil: validUntilMs === null ? undefined : timestampFromDate(new Date(validUntilMs)),
    }));
    if (!got.heard.ok) throw diverged(this.toString(), `answered ${describeHeard(got.heard)}`);
    const p = got.res!.coupon!;
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(p.id)) throw diverged(this.toString(), `id ${p.id} is not a lower-case UUID`);
    const c: ModelCoupon = {
      id: p.id, name, createdAtUs: usOf(p.createdAt), total: this.total, opensAtMs, closesAtMs, validUntilMs, pausedAtMs: null, next: { lo: 0, hi: 0 }, staleSoldOutUntilMs: 0, lateWinners: new Set(),
      winners: new Map(), issued: new Set(), redeemed: new Map(), cancelled: new Map(), issuedAt: new Map(), redeemedAt: new Map(),
    };
    const status = COUPON_STATUS[p.status] ?? '?';
    if (Number(p.acceptedCount) !== 0 || Number(p.issuedCount) !== 0 || Number(p.remaining) !== this.total || !couponStatuses(c, 0, 0, got.span).includes(status as never)) {
      throw diverged(this.toString(), `new coupon reads accepted=${p.acceptedCount} issued=${p.issuedCount} remaining=${p.remaining} status=${status}`);
    }
    m.coupons.push(c);
  }
  toString() { return `CreateCoupon(total=${this.total}, opensIn=${this.opensInMs}, closesAfter=${this.closesAfterMs}, validAfter=${this.validAfterMs})`; }
}

/**
 * IssueCoupon for one or more users at once (a user may appear twice: concurrent repeats). Every
 * second call goes over Connect JSON and plain HTTP (coupon-api's short path), the others over gRPC.
 */
export class Issue implements Cmd {
  readonly coupon: number;
  readonly spelling: Spelling;
  readonly users: string[];
  constructor(coupon: number, spelling: Spelling, users: string[]) { this.coupon = coupon; this.spelling = spelling; this.users = users; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const spelled = spell(c.id, this.spelling);
    const calls = await Promise.all(this.users.map(async (name, i) => {
      const client = i % 2 === 1 ? r.sys.storefrontJson : r.sys.storefront;
      const got = await settled(m, () => call(() => client.issueCoupon({ couponId: spelled, userId: user(m, name) }, { timeoutMs: 20_000 }),
        (res) => ({ ok: true, seq: Number(res.seq), state: STATE[res.state] })));
      return { user: user(m, name), span: got.span, heard: got.heard, retried: got.retried, released: got.released };
    }));
    const repeatStates = (u: string): UserState[] => (m.flushed && c.redeemed.has(u) ? ['ISSUED', 'REDEEMED'] : winnerStates(c, u));
    const wrong = applyIssues(c, calls, repeatStates);
    if (wrong) throw diverged(this.toString(m), wrong);
  }
  toString(m?: Model) { return `Issue(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${showSpelling(this.spelling)}, [${this.users.join(', ')}])`; }
}

/** IssueCoupon while every publish of coupon-api is held in the Kafka proxy: it must fail and change nothing. */
export class IssueWhileKafkaCut implements Cmd {
  readonly coupon: number;
  readonly name: string;
  constructor(coupon: number, name: string) { this.coupon = coupon; this.name = name; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const userId = user(m, this.name);
    // A gate Redis lost is rebuilt only once Kafka took the rebuild's fence record
    // (docs/decisions/0010-rebuild-only-from-settled-facts.md): with Kafka cut, that waits.
    const unarmed = (await r.sys.redis.client.exists(couponKeys(c.id).meta)) === 0;
    r.sys.proxy.hold(true);
    let got: Called<unknown>;
    try {
      const issue = () => call(() => r.sys.storefront.issueCoupon({ couponId: c.id, userId }, { timeoutMs: 30_000 }), (res) => ({ ok: true, seq: Number(res.seq), state: STATE[res.state] }));
      got = unarmed ? await issue() : await settled(m, issue, false);
    } finally {
      r.sys.proxy.hold(false);
      // Whatever was held lands now, late: the issuer must drop a released reservation's record.
      r.sys.proxy.release();
    }
    const allowed = issueAllowed(c, userId, got.span);
    const what = `answered ${describeHeard(got.heard)}`;
    if (unarmed && matches({ ok: false, code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' }, got.heard)) return;
    if ('repeat' in allowed) {
      if (staleRefusalOfLateWinner(c, userId, got.span, got.heard)) return;
      if (!got.heard.ok || got.heard.seq !== allowed.repeat) throw diverged(this.toString(m), `${what}; a repeat must be OK with seq ${allowed.repeat} (it publishes nothing)`);
      return;
    }
    const staleSoldOut = got.span.t0 < c.staleSoldOutUntilMs ? [{ ok: false as const, code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' }] : [];
    const options = [...allowed.refusals, ...staleSoldOut, ...(allowed.mayWin ? [{ ok: false as const, code: grpc.status.UNAVAILABLE, reason: 'PUBLISH_FAILED' }] : [])];
    if (!options.some((o) => matches(o, got.heard))) throw diverged(this.toString(m), `${what}; allowed: ${options.map(describeHeard).join(' | ')}`);
    // The reservation was made and released; an attempt retried on a transport failure may have been one too.
    if (!got.heard.ok && got.heard.reason === 'PUBLISH_FAILED') applyRelease(c);
    if (got.released > 0) c.next.hi = Math.min(c.total, Math.max(c.next.hi, c.winners.size + got.released + 1));
  }
  toString(m?: Model) { return `IssueWhileKafkaCut(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${this.name})`; }
}

export class GetCoupon implements Cmd {
  readonly coupon: number;
  readonly spelling: Spelling;
  constructor(coupon: number, spelling: Spelling) { this.coupon = coupon; this.spelling = spelling; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    await checkCoupon(r, c, spell(c.id, this.spelling), this.toString(m));
  }
  toString(m?: Model) { return `GetCoupon(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${showSpelling(this.spelling)})`; }
}

export class GetUserCoupon implements Cmd {
  readonly coupon: number;
  readonly spelling: Spelling;
  readonly name: string;
  constructor(coupon: number, spelling: Spelling, name: string) { this.coupon = coupon; this.spelling = spelling; this.name = name; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    await checkUserCoupon(r, c, spell(c.id, this.spelling), user(m, this.name), this.toString(m));
  }
  toString(m?: Model) { return `GetUserCoupon(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${showSpelling(this.spelling)}, ${this.name})`; }
}

export class ListUserCoupons implements Cmd {
  readonly name: string;
  readonly pageSize: number;
  constructor(name: string, pageSize: number) { this.name = name; this.pageSize = pageSize; }
  check() { return true; }
  async run(m: Model, r: Real) { await checkList(r, user(m, this.name), this.pageSize, this.toString()); }
  toString() { return `ListUserCoupons(${this.name}, page_size=${this.pageSize})`; }
}

/** RedeemCoupon and CancelRedemption for one (coupon, user), all at once. */
export class Redemptions implements Cmd {
  readonly coupon: number;
  readonly spelling: Spelling;
  readonly name: string;
  readonly ops: RedemptionOp[];
  constructor(coupon: number, spelling: Spelling, name: string, ops: RedemptionOp[]) { this.coupon = coupon; this.spelling = spelling; this.name = name; this.ops = ops; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const userId = who(m, c, this.name);
    // A winner's redemption is judged once the issuer wrote it (unless the issuer is paused: then
    // COUPON_NOT_ISSUED and a success are both allowed).
    if (c.winners.has(userId) && !c.issued.has(userId) && !m.issuerPaused) await checkUserCoupon(r, c, c.id, userId, `${this.toString(m)} (settling)`);
    const spelled = spell(c.id, this.spelling);
    const client = r.sys.payments.client;
    const answers: (UserCoupon | undefined)[] = [];
    const calls = await Promise.all(this.ops.map(async (op) => {
      const request = { couponId: spelled, userId, orderId: order(m, op.order) };
      const send = (): Promise<{ userCoupon?: UserCoupon }> => (op.kind === 'redeem' ? client.redeemCoupon(request, { timeoutMs: 20_000 }) : client.cancelRedemption(request, { timeoutMs: 20_000 }));
      const got = await settled(m, () => call(send, (res) => userCouponHeard(res.userCoupon)));
      if (got.heard.ok) {
        expectUserCouponNames(this.toString(m), got.res!.userCoupon, c, userId);
        const seq = c.winners.get(userId) ?? 0;
        if (got.heard.seq !== seq) throw diverged(this.toString(m), `${op.kind}(${op.order}) answered seq ${got.heard.seq}, model ${seq}`);
        answers.push(got.res!.userCoupon);
      }
      return { op: { kind: op.kind, order: order(m, op.order) }, span: got.span, heard: got.heard };
    }));
    const wrong = applyRedemptions(c, userId, calls);
    if (wrong) throw diverged(this.toString(m), wrong);
    for (const x of answers) {
      const moved = x ? sameMoments(c, userId, moments(x)) : undefined;
      if (moved) throw diverged(this.toString(m), moved);
    }
  }
  toString(m?: Model) { return `Redemptions(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${showSpelling(this.spelling)}, ${this.name}, [${this.ops.map((o) => `${o.kind} ${o.order}`).join(', ')}])`; }
}

/** A PAYMENT_STATUS_FAILED PaymentResult on payment.v1.result: CancelRedemption's effect, through Kafka. */
export class PaymentFailed implements Cmd {
  readonly coupon: number;
  readonly spelling: Spelling;
  readonly name: string;
  readonly orderName: string;
  constructor(coupon: number, spelling: Spelling, name: string, orderName: string) { this.coupon = coupon; this.spelling = spelling; this.name = name; this.orderName = orderName; }
  check(m: Readonly<Model>) { return m.coupons.length > 0 && !m.issuerPaused; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const userId = who(m, c, this.name);
    await awaitIssued(r, c);
    await r.sys.publishPaymentFailed(order(m, this.orderName), spell(c.id, this.spelling), userId);
    const [outcome] = redemptionOutcomes(c, redemptionStateOf(c, userId), { kind: 'cancel', order: order(m, this.orderName) }, { t0: Date.now(), t1: Date.now() });
    const next = outcome!.next;
    if (next.redeemed !== c.redeemed.get(userId)) c.redeemedAt.delete(userId);
    if (next.redeemed === undefined) c.redeemed.delete(userId); else c.redeemed.set(userId, next.redeemed);
    c.cancelled.set(userId, next.cancelled);
    await checkUserCoupon(r, c, c.id, userId, this.toString(m));
  }
  toString(m?: Model) { return `PaymentFailed(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${showSpelling(this.spelling)}, ${this.name}, ${this.orderName})`; }
}

// ---------------------------------------------------------------------------------------------
// Operating a sale (docs/api.md#updatecoupon-pausecoupon-resumecoupon-closecoupon): each answer is
// the changed coupon with live counts, checked at once (the change rebuilt a flushed gate first, so
// its accepted count is exact); the model then holds the change, and every later answer follows it.

/** After a change that changed something: a coupon sold out before it may have a sold-out view that still says so. */
function changed(c: ModelCoupon, wasSoldOut: boolean, span: Span): void {
  if (wasSoldOut) c.staleSoldOutUntilMs = span.t1 + GATE_LOCAL_RECHECK_MS + SLACK_MS;
}

function expectChanged(m: Model, c: ModelCoupon, got: Called<{ coupon?: PbCoupon }>, cmd: string): void {
  if (!got.heard.ok) throw diverged(cmd, `answered ${describeHeard(got.heard)}`);
  const verdict = judgeCoupon(m, c, got.res!.coupon!, got.span, true);
  if (verdict.hard) throw diverged(cmd, verdict.hard);
}

export class PauseCoupon implements Cmd {
  readonly coupon: number;
  readonly spelling: Spelling;
  constructor(coupon: number, spelling: Spelling) { this.coupon = coupon; this.spelling = spelling; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const wasSoldOut = c.winners.size >= c.total;
    const got = await settled(m, () => call(() => r.sys.operator.pauseCoupon({ couponId: spell(c.id, this.spelling) })));
    if (!got.heard.ok) throw diverged(this.toString(m), `answered ${describeHeard(got.heard)}`);
    const pausedAt = msOf(got.res!.coupon!.pausedAt);
    if (c.pausedAtMs === null) {
      // A new pause is stamped now; a repeat changes nothing.
      if (pausedAt === null || pausedAt < got.span.t0 - SLACK_MS || pausedAt > got.span.t1 + SLACK_MS) throw diverged(this.toString(m), `paused_at ${showMs(pausedAt)}, not within the call`);
      c.pausedAtMs = pausedAt;
      changed(c, wasSoldOut, got.span);
    }
    expectChanged(m, c, got, this.toString(m));
  }
  toString(m?: Model) { return `PauseCoupon(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${showSpelling(this.spelling)})`; }
}

export class ResumeCoupon implements Cmd {
  readonly coupon: number;
  constructor(coupon: number) { this.coupon = coupon; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const wasSoldOut = c.winners.size >= c.total;
    const got = await settled(m, () => call(() => r.sys.operator.resumeCoupon({ couponId: c.id })));
    if (c.pausedAtMs !== null && got.heard.ok) changed(c, wasSoldOut, got.span);
    c.pausedAtMs = null;
    expectChanged(m, c, got, this.toString(m));
  }
  toString(m?: Model) { return `ResumeCoupon(${m ? couponName(m, this.coupon) : `#${this.coupon}`})`; }
}

export class CloseCoupon implements Cmd {
  readonly coupon: number;
  constructor(coupon: number) { this.coupon = coupon; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const wasSoldOut = c.winners.size >= c.total;
    const before = c.closesAtMs;
    const got = await settled(m, () => call(() => r.sys.operator.closeCoupon({ couponId: c.id })));
    if (!got.heard.ok) throw diverged(this.toString(m), `answered ${describeHeard(got.heard)}`);
    const closes = msOf(got.res!.coupon!.closesAt);
    const { t0, t1 } = got.span;
    // closes_at becomes max(now, opens_at) (a coupon not open yet never opens), unless already past.
    const mayKeep = before !== null && before <= t1 + SLACK_MS;
    const mustKeep = before !== null && before < t0 - SLACK_MS;
    const isNow = closes !== null && closes >= Math.max(t0 - SLACK_MS, c.opensAtMs) && closes <= Math.max(t1 + SLACK_MS, c.opensAtMs) && (before === null || closes <= before);
    if (!((closes === before && mayKeep) || (!mustKeep && isNow))) {
      throw diverged(this.toString(m), `closes_at ${showMs(closes)}; before ${showMs(before)}, opens_at ${showMs(c.opensAtMs)}, called ${showMs(t0)}..${showMs(t1)}`);
    }
    c.closesAtMs = closes;
    if (closes !== before) changed(c, wasSoldOut, got.span);
    expectChanged(m, c, got, this.toString(m));
  }
  toString(m?: Model) { return `CloseCoupon(${m ? couponName(m, this.coupon) : `#${this.coupon}`})`; }
}

/**
 * UpdateCoupon with an update_mask of what is set: a new name (`rename`), a total relative to the
 * current total or to the winners (a restock, or a lowering that may go below the seqs handed out),
 * closes_at and valid_until relative to now (null: unset, never).
 */
export interface CouponEdit { rename?: number; total?: { from: 'total' | 'winners'; by: number }; closesInMs?: number | null; validInMs?: number | null }

export class UpdateCoupon implements Cmd {
  readonly coupon: number;
  readonly spelling: Spelling;
  readonly edit: CouponEdit;
  constructor(coupon: number, spelling: Spelling, edit: CouponEdit) { this.coupon = coupon; this.spelling = spelling; this.edit = edit; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) {
    const c = couponOf(m, this.coupon);
    const e = this.edit;
    const cmd = this.toString(m);
    const now = Date.now();
    const name = e.rename === undefined ? undefined : `model ${m.tag} renamed ${e.rename}`;
    const total = e.total === undefined ? undefined : Math.max(1, (e.total.from === 'total' ? c.total : c.winners.size) + e.total.by);
    const closes = e.closesInMs === undefined ? undefined : e.closesInMs === null ? null : now + e.closesInMs;
    const valid = e.validInMs === undefined ? undefined : e.validInMs === null ? null : now + e.validInMs;
    const paths = [...(name !== undefined ? ['name'] : []), ...(total !== undefined ? ['total_quantity'] : []), ...(closes !== undefined ? ['closes_at'] : []), ...(valid !== undefined ? ['valid_until'] : [])];
    const wasSoldOut = c.winners.size >= c.total;
    const got = await settled(m, () => call(() => r.sys.operator.updateCoupon({
      coupon: {
        id: spell(c.id, this.spelling), name: name ?? '', totalQuantity: BigInt(total ?? 0),
        closesAt: closes ? timestampFromDate(new Date(closes)) : undefined, validUntil: valid ? timestampFromDate(new Date(valid)) : undefined,
      },
      updateMask: { paths },
    })));
    const what = `answered ${describeHeard(got.heard)}`;
    // The window rules, on the coupon as it would be (src/catalog/changes.ts, docs/api.md).
    const nextCloses = closes === undefined ? c.closesAtMs : closes;
    const nextValid = valid === undefined ? c.validUntilMs : valid;
    const badField = nextCloses !== null && nextCloses <= c.opensAtMs ? 'closes_at'
      : nextValid !== null && nextValid <= c.opensAtMs ? 'valid_until'
        : nextValid !== null && nextCloses !== null && nextValid < nextCloses ? (valid !== undefined ? 'valid_until' : 'closes_at') : undefined;
    if (badField) {
      if (!matches(INVALID(badField), got.heard)) throw diverged(cmd, `${what}; want ${describeHeard(INVALID(badField))}`);
      return;
    }
    // A lowering below the highest seq handed out is refused, its floor that seq.
    if (total !== undefined && total < c.total) {
      const below = { ok: false as const, code: grpc.status.FAILED_PRECONDITION, reason: 'QUANTITY_BELOW_ACCEPTED' };
      if (total < c.next.lo && !matches(below, got.heard)) throw diverged(cmd, `${what}; ${total} is below ${c.next.lo}, the highest seq handed out: want ${describeHeard(below)}`);
      if (matches(below, got.heard)) {
        const floor = Number(got.metadata?.floor);
        if (total >= c.next.hi) throw diverged(cmd, `${what} (floor ${got.metadata?.floor}); ${total} is not below the highest seq handed out (at most ${c.next.hi}, ${c.winners.size} winners)`);
        if (!(floor > total && floor >= c.next.lo && floor <= c.next.hi)) {
          throw diverged(cmd, `${what} with floor ${got.metadata?.floor}; the floor is the highest seq handed out: ${c.next.lo === c.next.hi ? c.next.lo : `${c.next.lo}..${c.next.hi}`} (${c.winners.size} winners, highest winner's seq ${highestWinnerSeq(c)})`);
        }
        c.next = { lo: floor, hi: floor };
        return;
      }
    }
    if (!got.heard.ok) throw diverged(cmd, what);
    const changes = (name !== undefined && name !== c.name) || (total !== undefined && total !== c.total) || (closes !== undefined && closes !== c.closesAtMs) || (valid !== undefined && valid !== c.validUntilMs);
    if (name !== undefined) c.name = name;
    if (total !== undefined) c.total = total;
    if (closes !== undefined) c.closesAtMs = closes;
    if (valid !== undefined) c.validUntilMs = valid;
    // The gate's counter is never past the total.
    c.next.hi = Math.min(c.next.hi, c.total);
    if (changes) changed(c, wasSoldOut, got.span);
    expectChanged(m, c, got, cmd);
  }
  toString(m?: Model) {
    const e = this.edit;
    const parts = [
      ...(e.rename !== undefined ? [`name=renamed ${e.rename}`] : []),
      ...(e.total ? [`total=${e.total.from}${e.total.by >= 0 ? '+' : ''}${e.total.by}`] : []),
      ...(e.closesInMs !== undefined ? [`closes=${e.closesInMs === null ? 'never' : `now${e.closesInMs >= 0 ? '+' : ''}${e.closesInMs}`}`] : []),
      ...(e.validInMs !== undefined ? [`valid=${e.validInMs === null ? 'never' : `now${e.validInMs >= 0 ? '+' : ''}${e.validInMs}`}`] : []),
    ];
    return `UpdateCoupon(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${showSpelling(this.spelling)}, ${parts.join(', ')})`;
  }
}

export class ListCoupons implements Cmd {
  readonly pageSize: number;
  readonly status: CouponStatus | undefined;
  constructor(pageSize: number, status: CouponStatus | undefined) { this.pageSize = pageSize; this.status = status; }
  check(m: Readonly<Model>) { return m.coupons.length > 0; }
  async run(m: Model, r: Real) { await checkCouponList(r, this.pageSize, this.status, this.toString()); }
  toString() { return `ListCoupons(page_size=${this.pageSize}${this.status ? `, status=${this.status}` : ''})`; }
}

type CouponRpc = 'GetCoupon' | 'IssueCoupon' | 'GetUserCoupon' | 'RedeemCoupon' | 'CancelRedemption';
const COUPON_RPCS: CouponRpc[] = ['GetCoupon', 'IssueCoupon', 'GetUserCoupon', 'RedeemCoupon', 'CancelRedemption'];

async function callRpc(r: Real, rpc: CouponRpc, couponId: string, userId: string, orderId: string): Promise<Called<unknown>> {
  const s = r.sys;
  switch (rpc) {
    case 'GetCoupon': return call(() => s.operator.getCoupon({ couponId }));
    case 'IssueCoupon': return call(() => s.storefront.issueCoupon({ couponId, userId }));
    case 'GetUserCoupon': return call(() => s.storefront.getUserCoupon({ couponId, userId }));
    case 'RedeemCoupon': return call(() => s.payments.client.redeemCoupon({ couponId, userId, orderId }));
    case 'CancelRedemption': return call(() => s.payments.client.cancelRedemption({ couponId, userId, orderId }));
  }
}

/** A coupon_id not in UUID form: INVALID_ARGUMENT INVALID_FIELD coupon_id, and nothing changes. */
export class BadCouponId implements Cmd {
  readonly rpc: CouponRpc;
  readonly badId: string;
  constructor(rpc: CouponRpc, badId: string) { this.rpc = rpc; this.badId = badId; }
  check() { return true; }
  async run(m: Model, r: Real) {
    const got = await callRpc(r, this.rpc, this.badId, user(m, 'alice'), order(m, 'o1'));
    if (!matches(INVALID('coupon_id'), got.heard)) throw diverged(this.toString(), `answered ${describeHeard(got.heard)}; want ${describeHeard(INVALID('coupon_id'))}`);
  }
  toString() { return `BadCouponId(${this.rpc}, ${JSON.stringify(this.badId)})`; }
}

/** A well-formed UUID no coupon has: NOT_FOUND COUPON_NOT_FOUND. */
export class UnknownCoupon implements Cmd {
  readonly rpc: CouponRpc;
  readonly id: string;
  constructor(rpc: CouponRpc, id: string) { this.rpc = rpc; this.id = id; }
  check() { return true; }
  async run(m: Model, r: Real) {
    const got = await callRpc(r, this.rpc, this.id, user(m, 'alice'), order(m, 'o1'));
    if (!matches(NOT_FOUND, got.heard)) throw diverged(this.toString(), `answered ${describeHeard(got.heard)}`);
  }
  toString() { return `UnknownCoupon(${this.rpc}, ${this.id})`; }
}

/** A user_id outside the id alphabet: INVALID_ARGUMENT INVALID_FIELD user_id. */
export class BadUserId implements Cmd {
  readonly coupon: number;
  readonly rpc: CouponRpc;
  readonly badUser: string;
  constructor(coupon: number, rpc: CouponRpc, badUser: string) { this.coupon = coupon; this.rpc = rpc; this.badUser = badUser; }
  check(m: Readonly<Model>) { return m.coupons.length > 0 && this.rpc !== 'GetCoupon'; }
  async run(m: Model, r: Real) {
    const got = await callRpc(r, this.rpc, couponOf(m, this.coupon).id, this.badUser, order(m, 'o1'));
    if (!matches(INVALID('user_id'), got.heard)) throw diverged(this.toString(m), `answered ${describeHeard(got.heard)}`);
  }
  toString(m?: Model) { return `BadUserId(${m ? couponName(m, this.coupon) : `#${this.coupon}`}, ${this.rpc}, ${JSON.stringify(this.badUser)})`; }
}

export class Wait implements Cmd {
  readonly ms: number;
  constructor(ms: number) { this.ms = ms; }
  check() { return true; }
  async run() { await sleep(this.ms); }
  toString() { return `Wait(${this.ms})`; }
}

export class PauseIssuer implements Cmd {
  // A rebuild after a flush waits for the issuer; the model does not pause it once Redis was flushed.
  check(m: Readonly<Model>) { return !m.issuerPaused && !m.flushed; }
  run(m: Model, r: Real) { r.sys.pauseIssuer(); m.issuerPaused = true; return Promise.resolve(); }
  toString() { return 'PauseIssuer'; }
}

export class ResumeIssuer implements Cmd {
  check(m: Readonly<Model>) { return m.issuerPaused; }
  run(m: Model, r: Real) { r.sys.resumeIssuer(); m.issuerPaused = false; return Promise.resolve(); }
  toString() { return 'ResumeIssuer'; }
}

/**
 * FLUSHALL on coupon-api's own Redis: every gate and redemption state is rebuilt from the ledger,
 * the changed coupon (its total, window and pause), its counter at the highest seq the ledger holds.
 */
export class FlushRedis implements Cmd {
  check(m: Readonly<Model>) { return !m.issuerPaused; }
  async run(m: Model, r: Real) {
    await r.sys.redis.client.flushall();
    m.flushed = true;
    for (const c of m.coupons) c.next = { lo: highestWinnerSeq(c), hi: highestWinnerSeq(c) };
  }
  toString() { return 'FlushRedis'; }
}

export class KillApiWorker implements Cmd {
  check() { return true; }
  async run(_m: Model, r: Real) { await r.sys.killWorker(); }
  toString() { return 'KillApiWorker'; }
}

// ---------------------------------------------------------------------------------------------
// Arbitraries.

const uuidLike = fc.uuid({ version: 4 });
export const BAD_COUPON_IDS = [
  'not-a-coupon', '', ' ', 'x'.repeat(129), 'a|b',
  '7d0f3c52-4a1e-4d7e-9c55-00000000000', // 11 hex digits at the end
  '7d0f3c52-4a1e-4d7e-9c55-0000000000000', // 13
  '7d0f3c524a1e4d7e9c55000000000000', // no hyphens
  '{7d0f3c52-4a1e-4d7e-9c55-000000000000}',
  '7d0f3c52-4a1e-4d7e-9c55-00000000000g',
  '7D0F3C52-4A1E-4D7E-9C55-00000000000Ｆ', // a full-width F: a letter, not a hex digit
  '٧d0f3c52-4a1e-4d7e-9c55-000000000000', // an Arabic-Indic seven: a digit, not a hex digit
  ' 7d0f3c52-4a1e-4d7e-9c55-000000000000',
  '7d0f3c52:4a1e:4d7e:9c55:000000000000',
];
const BAD_USER_IDS = ['', 'a b', 'a|b', 'x'.repeat(129), 'e\u0301', 'bob\u200b'];

export function commandArbs(o: CommandOptions): fc.Arbitrary<Cmd>[] {
  const coupon = fc.nat({ max: 7 });
  const spelling: fc.Arbitrary<Spelling> = o.caseVariants
    ? fc.oneof({ weight: 2, arbitrary: fc.constant('lower' as const) }, fc.constant('upper' as const), fc.integer({ min: 1, max: 2 ** 30 }).map((mixed) => ({ mixed })))
    : fc.constant('lower' as const);
  const name = fc.constantFrom(...USERS);
  const orderName = fc.constantFrom(...ORDERS);
  const holder = fc.oneof({ weight: 1, arbitrary: name }, { weight: 3, arbitrary: fc.nat({ max: 3 }).map((k) => `winner:${k}`) });
  const op = fc.record({ kind: fc.constantFrom('redeem' as const, 'cancel' as const), order: orderName });
  const weighted = (weight: number, arbitrary: fc.Arbitrary<Cmd>) => ({ weight, arbitrary });
  const arbs = [
    weighted(3, fc.tuple(fc.integer({ min: 1, max: 4 }), fc.oneof({ weight: 3, arbitrary: fc.constant(-1_000) }, { weight: 1, arbitrary: fc.integer({ min: 300, max: 800 }) }),
      fc.option(fc.integer({ min: 600, max: 5_000 }), { freq: 2 }), fc.option(fc.integer({ min: 500, max: 4_000 }), { freq: 2 }))
      .map(([total, opens, closes, valid]) => new CreateCoupon(total, opens, closes, valid))),
    weighted(6, fc.tuple(coupon, spelling, fc.array(name, { minLength: 1, maxLength: 3 })).map(([c, s, us]) => new Issue(c, s, us))),
    weighted(2, fc.tuple(coupon, spelling).map(([c, s]) => new GetCoupon(c, s))),
    weighted(2, fc.tuple(coupon, spelling, name).map(([c, s, u]) => new GetUserCoupon(c, s, u))),
    weighted(1, fc.tuple(name, fc.integer({ min: 1, max: 3 })).map(([u, p]) => new ListUserCoupons(u, p))),
    weighted(5, fc.tuple(coupon, spelling, holder, fc.array(op, { minLength: 1, maxLength: 3 })).map(([c, s, u, ops]) => new Redemptions(c, s, u, ops))),
    weighted(1, fc.tuple(coupon, spelling, holder, orderName).map(([c, s, u, x]) => new PaymentFailed(c, s, u, x))),
    weighted(1, fc.tuple(fc.constantFrom(...COUPON_RPCS), o.caseVariants ? fc.constantFrom(...BAD_COUPON_IDS) : fc.constantFrom('', ' ', 'x'.repeat(129), 'a|b'))
      .map(([rpc, id]) => new BadCouponId(rpc, id))),
    weighted(1, fc.tuple(fc.constantFrom(...COUPON_RPCS), uuidLike, spelling).map(([rpc, id, s]) => new UnknownCoupon(rpc, spell(id, s)))),
    weighted(1, fc.tuple(coupon, fc.constantFrom(...COUPON_RPCS.filter((x) => x !== 'GetCoupon')), fc.constantFrom(...BAD_USER_IDS)).map(([c, rpc, u]) => new BadUserId(c, rpc, u))),
    weighted(1, fc.integer({ min: 100, max: 1_500 }).map((ms) => new Wait(ms))),
    // Operating the sale.
    weighted(1, fc.tuple(coupon, spelling).map(([c, s]) => new PauseCoupon(c, s))),
    weighted(1, coupon.map((c) => new ResumeCoupon(c))),
    weighted(1, coupon.map((c) => new CloseCoupon(c))),
    // A restock, or a lowering towards (and below) the seqs handed out, sometimes with a new name.
    weighted(3, fc.tuple(coupon, spelling, fc.option(fc.nat({ max: 3 }), { freq: 3, nil: undefined }), fc.oneof(
      fc.record({ from: fc.constant('total' as const), by: fc.integer({ min: 1, max: 3 }) }),
      fc.record({ from: fc.constant('winners' as const), by: fc.integer({ min: -3, max: 1 }) }),
    )).map(([c, s, rename, total]) => new UpdateCoupon(c, s, rename === undefined ? { total } : { rename, total }))),
    // The window (null: unset), sometimes with a new name.
    weighted(1, fc.tuple(coupon, spelling, fc.record({
      rename: fc.option(fc.nat({ max: 3 }), { freq: 3, nil: undefined }),
      closesInMs: fc.option(fc.option(fc.integer({ min: -1_500, max: 4_000 }), { freq: 4 }), { freq: 2, nil: undefined }),
      validInMs: fc.option(fc.option(fc.integer({ min: -1_000, max: 5_000 }), { freq: 4 }), { freq: 3, nil: undefined }),
    }, { requiredKeys: [] }).filter((e) => Object.values(e).some((v) => v !== undefined)))
      .map(([c, s, e]) => new UpdateCoupon(c, s, e))),
    weighted(1, fc.tuple(fc.constantFrom(1, 2, 50), fc.option(fc.constantFrom<CouponStatus>('OPEN', 'PAUSED', 'SOLD_OUT', 'CLOSED', 'COMPLETE', 'SCHEDULED', 'EXPIRED'), { freq: 2, nil: undefined }))
      .map(([size, status]) => new ListCoupons(size, status))),
  ];
  if (o.faults) {
    arbs.push(
      weighted(1, fc.constant(new PauseIssuer())),
      weighted(1, fc.constant(new ResumeIssuer())),
      weighted(1, fc.constant(new FlushRedis())),
      weighted(1, fc.tuple(coupon, name).map(([c, u]) => new IssueWhileKafkaCut(c, u))),
      weighted(1, fc.constant(new KillApiWorker())),
    );
  }
  // fc.commands picks uniformly among its arbitraries: a weight is that many copies.
  return arbs.flatMap((a) => Array.from({ length: a.weight }, () => a.arbitrary));
}

/** Runs one command list against the real system, then the end-of-run check. */
export async function runCommands(sys: System, cmds: Iterable<Cmd>): Promise<void> {
  const setup = newRun(sys);
  // Counted as they run; the wrapped commands still tell fast-check which ran, for shrinking.
  const counted = function* () {
    for (const cmd of cmds) {
      yield { check: (m: Readonly<Model>) => cmd.check(m), run: (m: Model, r: Real) => { bump(`command ${String(cmd).split('(')[0]}`); return cmd.run(m, r); }, toString: () => String(cmd) };
    }
  };
  await fc.asyncModelRun(() => setup, counted());
  bump('sequences');
  await finalCheck(setup.real);
}

/** Replays an explicit command list (a regression) from a fresh model. */
export async function replay(sys: System, cmds: Cmd[]): Promise<void> {
  const setup = newRun(sys);
  for (const cmd of cmds) if (cmd.check(setup.model)) await cmd.run(setup.model, setup.real);
  await finalCheck(setup.real);
}
