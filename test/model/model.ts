// The model: what README.md's answer tables and proto/coupon/v1/*.proto promise, over plain
// in-memory coupons, winners, seqs, redemptions and cancellations. No I/O here: the commands
// (test/model/commands.ts) call the real service and ask the model which answers are allowed.
import * as grpc from '@grpc/grpc-js';

export type UserState = 'NOT_REQUESTED' | 'PENDING' | 'ISSUED' | 'REDEEMED';

export interface ModelCoupon {
  /** The canonical (lower-case) id CreateCoupon returned. */
  id: string;
  name: string;
  /** created_at in microseconds, as CreateCoupon answered it (ListCoupons filters and orders by it). */
  createdAtUs: number;
  total: number;
  opensAtMs: number;
  closesAtMs: number | null;
  validUntilMs: number | null;
  /** paused_at as PauseCoupon answered it; null while not paused. */
  pausedAtMs: number | null;
  /**
   * The gate's highest seq handed out (its `next` counter), a lower and an upper bound: exact
   * (lo = hi) unless a reservation was released (PUBLISH_FAILED, or a retried call that may have
   * been one), which can leave a seq past the winners waiting in the free list. Every seq in 1..next
   * is a winner's or free, so the free seqs are 1..next minus the winners' (docs/api.md, UpdateCoupon:
   * the floor of a lowering).
   */
  next: { lo: number; hi: number };
  /**
   * Calls that start before this (ms) may hear COUPON_SOLD_OUT from the in-process sold-out view:
   * the coupon was sold out when an operator changed it, and a view may hold the old sell-out for up
   * to GATE_LOCAL_RECHECK_MS after the change's OK (docs/api.md#updatecoupon-pausecoupon-resumecoupon-closecoupon).
   */
  staleSoldOutUntilMs: number;
  /**
   * Users who won within that window: a view that read the coupon before they won does not know
   * them, so until the window ends their repeats may hear its COUPON_SOLD_OUT too (docs/design.md:
   * it never refuses a winner of the coupon it read; one who won afterwards through another process
   * may hear it within the recheck).
   */
  lateWinners: Set<string>;
  /** user -> seq, for every user told OK. */
  winners: Map<string, number>;
  /** Winners the ledger has written (observed ISSUED or later); others may still be PENDING. */
  issued: Set<string>;
  /** user -> the order holding the coupon. */
  redeemed: Map<string, string>;
  /** user -> orders remembered as cancelled. */
  cancelled: Map<string, Set<string>>;
  /** user -> issued_at first seen (ms): one fact, the same in every later answer. */
  issuedAt: Map<string, number>;
  /** user -> redeemed_at first seen for the order holding the coupon now. */
  redeemedAt: Map<string, number>;
}

/**
 * issued_at and redeemed_at name one moment each: every answer after the first must repeat it
 * (README: a repeat of the redeeming order gets "the same result"). Returns what differs.
 */
export function sameMoments(c: ModelCoupon, user: string, seen: { state?: UserState; orderId?: string; issuedAtMs: number | null; redeemedAtMs: number | null }): string | undefined {
  if (seen.state !== 'ISSUED' && seen.state !== 'REDEEMED') return undefined;
  if (seen.issuedAtMs === null) return 'issued_at unset';
  const issued = c.issuedAt.get(user);
  if (issued === undefined) c.issuedAt.set(user, seen.issuedAtMs);
  else if (issued !== seen.issuedAtMs) return `issued_at ${new Date(seen.issuedAtMs).toISOString()}, earlier ${new Date(issued).toISOString()}`;
  if (seen.state !== 'REDEEMED' || seen.orderId !== c.redeemed.get(user)) return undefined;
  if (seen.redeemedAtMs === null) return 'redeemed_at unset';
  const redeemed = c.redeemedAt.get(user);
  if (redeemed === undefined) c.redeemedAt.set(user, seen.redeemedAtMs);
  else if (redeemed !== seen.redeemedAtMs) return `redeemed_at ${new Date(seen.redeemedAtMs).toISOString()}, earlier ${new Date(redeemed).toISOString()} for the same order`;
  return undefined;
}

export interface Model {
  /** A tag of this run, in every user and order id, so runs never share a user. */
  tag: string;
  coupons: ModelCoupon[];
  /** Since a Redis flush, until every command after it: calls may answer BACKEND_UNAVAILABLE while rebuilding. */
  flushed: boolean;
  issuerPaused: boolean;
}

export const newModel = (tag: string): Model => ({ tag, coupons: [], flushed: false, issuerPaused: false });

/** An answer as the caller sees it. */
export type Heard =
  | { ok: true; seq?: number; state?: UserState; orderId?: string }
  | { ok: false; code: grpc.status; reason: string; field?: string };

export const refused = (code: grpc.status, reason: string): Heard => ({ ok: false, code, reason });
export const INVALID = (field: string): Heard => ({ ok: false, code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD', field });
export const NOT_FOUND = refused(grpc.status.NOT_FOUND, 'COUPON_NOT_FOUND');
const pre = (reason: string) => refused(grpc.status.FAILED_PRECONDITION, reason);

export const describeHeard = (h: Heard) => h.ok
  ? `OK${h.seq !== undefined ? ` seq=${h.seq}` : ''}${h.state ? ` ${h.state}` : ''}${h.orderId ? ` order=${h.orderId}` : ''}`
  : `${grpc.status[h.code]} ${h.reason}${h.field ? ` field=${h.field}` : ''}`;

/** Same answer, comparing only what the expectation names. */
export function matches(expected: Heard, actual: Heard): boolean {
  if (expected.ok !== actual.ok) return false;
  if (expected.ok && actual.ok) {
    return (expected.seq === undefined || expected.seq === actual.seq)
      && (expected.state === undefined || expected.state === actual.state)
      && (expected.orderId === undefined || expected.orderId === actual.orderId);
  }
  if (expected.ok || actual.ok) return false;
  return expected.code === actual.code && expected.reason === actual.reason && (expected.field === undefined || expected.field === actual.field);
}

// ---------------------------------------------------------------------------------------------
// Ids. A coupon id is a UUID in any letter case; every answer names it in lower case.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isCouponId = (s: string) => UUID.test(s);
export const canonical = (s: string) => s.toLowerCase();

export function findCoupon(m: Model, spelled: string): ModelCoupon | undefined {
  return isCouponId(spelled) ? m.coupons.find((c) => c.id === canonical(spelled)) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Time. Both sides read one clock, but a call spans [t0, t1]: a boundary inside it (with a little
// slack for the server's own reading) allows either side's answer.

export const SLACK_MS = 50;
/** GATE_LOCAL_RECHECK_MS, as test/model/system.ts sets it. */
export const GATE_LOCAL_RECHECK_MS = 100;
export interface Span { t0: number; t1: number }
const maybeBefore = (s: Span, at: number) => s.t0 - SLACK_MS < at;
const maybeAtOrAfter = (s: Span, at: number) => s.t1 + SLACK_MS >= at;

// ---------------------------------------------------------------------------------------------
// IssueCoupon (docs/api.md#issuecoupon: the answer table). A repeat is OK with the original seq
// whatever the window, count or pause; then before opens_at NOT_OPEN, after closes_at CLOSED, no
// unit left SOLD_OUT, paused PAUSED (gate-reserve.lua's order), else a new seq in 1..total, distinct
// from every other winner's: a free seq first, then the ones past the highest handed out.

export type IssueAllowed = { repeat: number } | { refusals: Heard[]; mayWin: boolean };

export function issueAllowed(c: ModelCoupon, user: string, span: Span): IssueAllowed {
  const seq = c.winners.get(user);
  if (seq !== undefined) return { repeat: seq };
  const refusals: Heard[] = [];
  let open = false;
  if (maybeBefore(span, c.opensAtMs)) refusals.push(pre('COUPON_NOT_OPEN'));
  if (maybeAtOrAfter(span, c.opensAtMs)) {
    if (c.closesAtMs !== null && maybeAtOrAfter(span, c.closesAtMs)) refusals.push(pre('COUPON_CLOSED'));
    if (c.closesAtMs === null || maybeBefore(span, c.closesAtMs)) open = true;
  }
  if (open && c.winners.size >= c.total) refusals.push(refused(grpc.status.RESOURCE_EXHAUSTED, 'COUPON_SOLD_OUT'));
  else if (open && c.pausedAtMs !== null) refusals.push(pre('COUPON_PAUSED'));
  return { refusals, mayWin: open && c.winners.size < c.total && c.pausedAtMs === null };
}

/** Seqs in 1..next that no winner holds: the gate's free list, when next is exact. */
export function freeSeqs(c: ModelCoupon): number[] | undefined {
  if (c.next.lo !== c.next.hi) return undefined;
  const held = new Set(c.winners.values());
  return Array.from({ length: c.next.lo }, (_, i) => i + 1).filter((s) => !held.has(s));
}

/** The highest seq a winner holds (0 for none). */
export const highestWinnerSeq = (c: ModelCoupon) => Math.max(0, ...c.winners.values());

/** The state a repeat (or a read) may report for a winner. */
export function winnerStates(c: ModelCoupon, user: string): UserState[] {
  if (c.redeemed.has(user)) return ['REDEEMED'];
  if (c.issued.has(user)) return ['ISSUED'];
  return ['PENDING', 'ISSUED'];
}

/** A repeat of a user who won within a changed sold-out coupon's stale window, refused by a view that read the coupon before. */
export function staleRefusalOfLateWinner(c: ModelCoupon, user: string, span: Span, heard: Heard): boolean {
  return !heard.ok && heard.code === grpc.status.RESOURCE_EXHAUSTED && heard.reason === 'COUPON_SOLD_OUT'
    && span.t0 < c.staleSoldOutUntilMs && c.lateWinners.has(user);
}

/**
 * Concurrent IssueCoupon calls for one coupon (Promise.all). Checks that the answers are those of
 * some order of the calls, and applies the winners. Returns a description of what is wrong, or
 * undefined.
 */
export function applyIssues(c: ModelCoupon, calls: { user: string; span: Span; heard: Heard; retried?: boolean; released?: number }[], repeatStates: (user: string) => UserState[] = (u) => winnerStates(c, u)): string | undefined {
  const before = new Map(c.winners);
  const wins = new Map<string, number>();
  for (const { user, heard } of calls) {
    if (!heard.ok || before.has(user)) continue;
    const prior = wins.get(user);
    if (prior !== undefined && prior !== heard.seq) return `${user} won twice at once, with seqs ${prior} and ${heard.seq}`;
    wins.set(user, heard.seq!);
  }
  if (before.size + wins.size > c.total) return `${before.size + wins.size} winners for ${c.total} units`;
  const taken = new Map([...before].map(([u, s]) => [s, u]));
  for (const [user, seq] of wins) {
    if (!Number.isInteger(seq) || seq < 1 || seq > c.total) return `${user} won seq ${seq}, outside 1..${c.total}`;
    const holder = taken.get(seq);
    if (holder !== undefined) return `${user} won seq ${seq}, already ${holder}'s`;
    taken.set(seq, user);
  }
  // Reservations that may have been released (a PUBLISH_FAILED heard and retried, or an attempt
  // given up on a transport error): each may have moved the gate's counter without a winner.
  const released = calls.reduce((n, x) => n + (x.released ?? 0), 0);
  const free = freeSeqs(c);
  if (free && released === 0 && wins.size > 0) {
    // Free seqs go first (LPOP), then the ones past the highest handed out (INCR): after a restock
    // of a sold-out coupon, exactly the seqs past the old total.
    const n = c.next.lo;
    const fresh = [...wins.values()].filter((s) => s > n).sort((a, b) => a - b);
    const want = Math.max(0, wins.size - free.length);
    const expected = Array.from({ length: want }, (_, i) => n + 1 + i);
    if (fresh.join() !== expected.join()) {
      return `new seqs ${[...wins.values()].sort((a, b) => a - b).join(',')}: with free seqs [${free.join(',')}] and ${n} the highest handed out, ${wins.size} new winners take ${Math.min(wins.size, free.length)} free seqs and then ${expected.join(',') || 'none past it'}`;
    }
  }
  const soldOutAfter = before.size + wins.size >= c.total;
  for (const { user, span, heard, retried } of calls) {
    const known = before.get(user);
    const won = wins.get(user);
    const what = `IssueCoupon(${user}) answered ${describeHeard(heard)}`;
    if (known !== undefined) {
      if (staleRefusalOfLateWinner(c, user, span, heard)) continue;
      if (!heard.ok || heard.seq !== known) return `${what}; a repeat must be OK with seq ${known}`;
      if (!repeatStates(user).includes(heard.state!)) return `${what}; a repeat's state must be one of ${repeatStates(user).join('|')}`;
      continue;
    }
    const allowed = issueAllowed({ ...c, winners: before }, user, span) as { refusals: Heard[]; mayWin: boolean };
    if (heard.ok) {
      if (!allowed.mayWin) return `${what}; the coupon could not be won then (${allowed.refusals.map(describeHeard).join(' | ')})`;
      // A concurrent call of the same user, or a retry of one whose first answer was lost, may
      // find the coupon further along.
      const alone = calls.filter((x) => x.user === user).length === 1 && !retried;
      if (heard.state !== 'PENDING' && (alone || heard.state !== 'ISSUED')) return `${what}; a new win is PENDING`;
      continue;
    }
    // The same user's concurrent call that won: this one is a repeat, unless it ran before the
    // opening, or it heard a sold-out view's old sell-out within its recheck after a change (the one
    // difference decision 0006 allows: another process, or the same one after its recheck, let the
    // other call through to the restocked gate).
    const staleSoldOut = heard.code === grpc.status.RESOURCE_EXHAUSTED && heard.reason === 'COUPON_SOLD_OUT' && span.t0 < c.staleSoldOutUntilMs;
    if (won !== undefined && !staleSoldOut && !(heard.reason === 'COUPON_NOT_OPEN' && allowed.refusals.some((r) => matches(r, heard)))) {
      return `${what}, while a concurrent call of the same user won seq ${won}`;
    }
    if (heard.code === grpc.status.RESOURCE_EXHAUSTED && heard.reason === 'COUPON_SOLD_OUT') {
      // The one difference a change leaves: a sold-out view's old sell-out, within its recheck.
      if (!soldOutAfter && span.t0 >= c.staleSoldOutUntilMs) return `${what}, yet only ${before.size + wins.size} of ${c.total} units were taken`;
      continue;
    }
    const windowRefusal = allowed.refusals.some((r) => r.ok === false && r.reason !== 'COUPON_SOLD_OUT' && matches(r, heard));
    if (!windowRefusal) return `${what}; allowed: ${[...(allowed.mayWin ? ['OK new seq'] : []), ...allowed.refusals.map(describeHeard)].join(' | ')}`;
  }
  for (const [user, seq] of wins) {
    c.winners.set(user, seq);
    if (calls.some((x) => x.user === user && x.span.t0 < c.staleSoldOutUntilMs)) c.lateWinners.add(user);
  }
  const after = c.winners.size;
  // next never passes the total: the gate hands out a seq only while a unit is left.
  const ceiling = Math.min(c.total, Math.max(c.next.hi, after + released));
  const beyond = [...wins].find(([, seq]) => seq > ceiling);
  if (beyond) return `${beyond[0]} won seq ${beyond[1]}, past any the gate could hand out (next was at most ${c.next.hi}, ${after} winners, ${released} reservations maybe released)`;
  c.next = { lo: Math.max(c.next.lo, after, highestWinnerSeq(c)), hi: ceiling };
  return undefined;
}

/** A reservation was made and released (PUBLISH_FAILED): it took a free seq, or one past next. */
export function applyRelease(c: ModelCoupon): void {
  const past = c.winners.size + 1;
  c.next = { lo: Math.max(c.next.lo, past), hi: Math.max(c.next.hi, past) };
}

// ---------------------------------------------------------------------------------------------
// RedeemCoupon / CancelRedemption (README "Redemption": both answer tables). Deterministic once we
// know whether the coupon is issued yet and which side of valid_until the call fell on; concurrent
// calls are checked against every order of them.

export interface RedemptionState { winner: boolean; issued: boolean | 'maybe'; redeemed: string | undefined; cancelled: Set<string> }
export type RedemptionOp = { kind: 'redeem' | 'cancel'; order: string };

function stateOf(s: RedemptionState, issued: boolean): UserState {
  if (s.redeemed !== undefined) return 'REDEEMED';
  if (!s.winner) return 'NOT_REQUESTED';
  return issued ? 'ISSUED' : 'PENDING';
}

/** Every (answer, next state) an op may have from `s`. */
export function redemptionOutcomes(c: ModelCoupon, s: RedemptionState, op: RedemptionOp, span: Span): { heard: Heard; next: RedemptionState }[] {
  const issuedChoices = s.issued === 'maybe' ? [false, true] : [s.issued];
  const out: { heard: Heard; next: RedemptionState }[] = [];
  for (const issued of issuedChoices) {
    const fixed: RedemptionState = { ...s, issued, cancelled: new Set(s.cancelled) };
    if (op.kind === 'redeem') {
      if (s.cancelled.has(op.order)) { out.push({ heard: pre('REDEMPTION_CANCELLED'), next: fixed }); continue; }
      if (s.redeemed === op.order) { out.push({ heard: { ok: true, state: 'REDEEMED', orderId: op.order }, next: fixed }); continue; }
      if (s.redeemed !== undefined) { out.push({ heard: pre('COUPON_ALREADY_REDEEMED'), next: fixed }); continue; }
      if (!s.winner || !issued) { out.push({ heard: pre('COUPON_NOT_ISSUED'), next: fixed }); continue; }
      if (c.validUntilMs !== null && span.t1 + SLACK_MS > c.validUntilMs) out.push({ heard: pre('COUPON_EXPIRED'), next: fixed });
      if (c.validUntilMs === null || span.t0 - SLACK_MS <= c.validUntilMs) out.push({ heard: { ok: true, state: 'REDEEMED', orderId: op.order }, next: { ...fixed, redeemed: op.order } });
    } else {
      const remembered = new Set(s.cancelled).add(op.order);
      if (s.cancelled.has(op.order)) { out.push({ heard: { ok: true, state: stateOf(s, issued), orderId: s.redeemed ?? '' }, next: fixed }); continue; }
      if (s.redeemed === op.order) { out.push({ heard: { ok: true, state: 'ISSUED', orderId: '' }, next: { ...fixed, redeemed: undefined, cancelled: remembered } }); continue; }
      if (s.redeemed !== undefined) { out.push({ heard: pre('ORDER_MISMATCH'), next: { ...fixed, cancelled: remembered } }); continue; }
      out.push({ heard: { ok: true, state: stateOf(s, issued), orderId: '' }, next: { ...fixed, cancelled: remembered } });
    }
  }
  return out;
}

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

export function redemptionStateOf(c: ModelCoupon, user: string): RedemptionState {
  return {
    winner: c.winners.has(user),
    issued: c.issued.has(user) ? true : c.winners.has(user) ? 'maybe' : false,
    redeemed: c.redeemed.get(user),
    cancelled: new Set(c.cancelled.get(user) ?? []),
  };
}

/**
 * Concurrent redemption calls on one (coupon, user): the answers must be those of some order of
 * the calls. Applies that order's end state; returns what is wrong, or undefined.
 */
export function applyRedemptions(c: ModelCoupon, user: string, calls: { op: RedemptionOp; span: Span; heard: Heard }[]): string | undefined {
  const start = redemptionStateOf(c, user);
  const indexes = calls.map((_, i) => i);
  let found: RedemptionState | undefined;
  const walk = (s: RedemptionState, order: number[]): boolean => {
    if (order.length === 0) { found = s; return true; }
    const [i, ...rest] = order;
    const call = calls[i!]!;
    return redemptionOutcomes(c, s, call.op, call.span).some((o) => matches(o.heard, call.heard) && walk(o.next, rest));
  };
  if (!permutations(indexes).some((order) => walk(start, order))) {
    const heard = calls.map((x) => `${x.op.kind}(${x.op.order}) -> ${describeHeard(x.heard)}`).join('; ');
    const alone = calls.map((x) => `${x.op.kind}(${x.op.order}) alone: ${redemptionOutcomes(c, start, x.op, x.span).map((o) => describeHeard(o.heard)).join(' | ')}`).join('; ');
    return `no order of the calls gives these answers: ${heard}. From ${JSON.stringify({ ...start, cancelled: [...start.cancelled] })}: ${alone}`;
  }
  const end = found!;
  if (end.issued === true && c.winners.has(user)) c.issued.add(user);
  if (end.redeemed !== c.redeemed.get(user)) c.redeemedAt.delete(user);
  if (end.redeemed === undefined) c.redeemed.delete(user); else c.redeemed.set(user, end.redeemed);
  if (end.cancelled.size > 0) c.cancelled.set(user, end.cancelled);
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Reads.

export type CouponStatus = 'SCHEDULED' | 'OPEN' | 'SOLD_OUT' | 'CLOSED' | 'COMPLETE' | 'PAUSED' | 'EXPIRED';

/** coupon.proto's CouponStatus, from the window, the pause and the counts: every status possible during `span`. */
export function couponStatuses(c: ModelCoupon, accepted: number, issued: number, span: Span): CouponStatus[] {
  const out = new Set<CouponStatus>();
  for (const now of [span.t0 - SLACK_MS, span.t1 + SLACK_MS, c.opensAtMs, c.closesAtMs ?? span.t0, c.validUntilMs ?? span.t0].filter((t) => t >= span.t0 - SLACK_MS && t <= span.t1 + SLACK_MS)) {
    if (now < c.opensAtMs) out.add('SCHEDULED');
    else if (c.validUntilMs !== null && now >= c.validUntilMs) out.add('EXPIRED');
    else if (issued >= c.total) out.add('COMPLETE');
    else if (accepted >= c.total) out.add('SOLD_OUT');
    else if (c.closesAtMs !== null && now >= c.closesAtMs) out.add('CLOSED');
    else if (c.pausedAtMs !== null) out.add('PAUSED');
    else out.add('OPEN');
  }
  return [...out];
}

/** What a user's coupon reads as, settled: the issuer has written every winner. */
export function settledUserCoupon(c: ModelCoupon, user: string): { seq: number; state: UserState; orderId: string } {
  const seq = c.winners.get(user);
  if (seq === undefined) return { seq: 0, state: 'NOT_REQUESTED', orderId: '' };
  const order = c.redeemed.get(user);
  return { seq, state: order ? 'REDEEMED' : 'ISSUED', orderId: order ?? '' };
}
