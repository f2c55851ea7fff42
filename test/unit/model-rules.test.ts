// The model's rules (test/model/model.ts) for answers the model test once took for divergences
// although the docs promise them; each case is the shrunk sequence's moment, as pure logic, so it
// holds whatever the timing of a replay.
import { describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { applyIssues, type ModelCoupon } from '../model/model.ts';

function soldOutThenRestocked(staleSoldOutUntilMs: number): ModelCoupon {
  return {
    id: '00000000-0000-4000-8000-000000000001', name: 'c', createdAtUs: 0, total: 2, opensAtMs: 0, closesAtMs: null, validUntilMs: null, pausedAtMs: null,
    next: { lo: 1, hi: 1 }, staleSoldOutUntilMs, lateWinners: new Set(),
    winners: new Map([['m.BOB', 1]]), issued: new Set(), redeemed: new Map(), cancelled: new Map(), issuedAt: new Map(), redeemedAt: new Map(),
  };
}

describe('the model, right after a restock of a sold-out coupon (seed 77001, run 798)', () => {
  const span = { t0: 10_000, t1: 10_020 };
  const calls = [
    { user: 'm.carol', span, heard: { ok: true as const, seq: 2, state: 'PENDING' as const } },
    { user: 'm.carol', span, heard: { ok: false as const, code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' } },
  ];

  it("allows one call of a user to hear a sold-out view's old sell-out while another of theirs wins, within the view's recheck (decision 0006)", () => {
    const c = soldOutThenRestocked(span.t0 + 100);
    expect(applyIssues(c, calls)).toBeUndefined();
    expect(c.winners.get('m.carol')).toBe(2);
  });

  it('does not allow it once the recheck is over', () => {
    expect(applyIssues(soldOutThenRestocked(span.t0), calls)).toBe('IssueCoupon(m.carol) answered RESOURCE_EXHAUSTED COUPON_SOLD_OUT, while a concurrent call of the same user won seq 2');
  });
});

describe('the model, a user who won a restocked unit (seed 77001, run 245)', () => {
  const refusedSoldOut = { ok: false as const, code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' };

  it("allows their repeat, within the window, to hear the old sell-out from a view that read the coupon before they won (docs/design.md)", () => {
    const c = soldOutThenRestocked(10_100);
    expect(applyIssues(c, [{ user: 'm.Alice', span: { t0: 10_000, t1: 10_020 }, heard: { ok: true, seq: 2, state: 'PENDING' } }])).toBeUndefined();
    expect(c.lateWinners.has('m.Alice')).toBe(true);
    expect(applyIssues(c, [{ user: 'm.Alice', span: { t0: 10_040, t1: 10_060 }, heard: refusedSoldOut }])).toBeUndefined();
    // After the window, a repeat is OK with the seq again.
    expect(applyIssues(c, [{ user: 'm.Alice', span: { t0: 10_100, t1: 10_120 }, heard: refusedSoldOut }])).toBe('IssueCoupon(m.Alice) answered RESOURCE_EXHAUSTED COUPON_SOLD_OUT; a repeat must be OK with seq 2');
  });

  it('never allows it to a winner the view could have read: one who won before the change', () => {
    const c = soldOutThenRestocked(10_100);
    expect(applyIssues(c, [{ user: 'm.BOB', span: { t0: 10_040, t1: 10_060 }, heard: refusedSoldOut }])).toBe('IssueCoupon(m.BOB) answered RESOURCE_EXHAUSTED COUPON_SOLD_OUT; a repeat must be OK with seq 1');
  });
});

