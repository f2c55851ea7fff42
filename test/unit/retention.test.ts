// When a finished coupon's Redis state may go (docs/architecture.md#retention), as pure rules.
import { describe, expect, it } from 'vitest';
import { deadlineWithoutGate, retentionDeadline } from '../../src/domain/retention.ts';
import { gateMetaOf } from '../../src/gate/gate-scripts.ts';
import type { CouponRow } from '../../src/store/coupons.ts';

const DAY = 86_400_000;
const at = (ms: number) => new Date(ms);

describe('retentionDeadline', () => {
  it('keeps forever a coupon that can still be issued or redeemed forever', () => {
    expect(retentionDeadline({ closes_at: null, completed_at: null, valid_until: at(10 * DAY) }, DAY)).toBe(0);
    expect(retentionDeadline({ closes_at: at(5 * DAY), completed_at: null, valid_until: null }, DAY)).toBe(0);
  });

  it('is retention after the later of the end of issuing and valid_until', () => {
    expect(retentionDeadline({ closes_at: at(5 * DAY), completed_at: null, valid_until: at(10 * DAY) }, DAY)).toBe(11 * DAY);
    expect(retentionDeadline({ closes_at: null, completed_at: at(12 * DAY), valid_until: at(10 * DAY) }, DAY)).toBe(13 * DAY);
  });

  it('counts issuing as ended at closes_at when the coupon has one, even if it completed earlier', () => {
    expect(retentionDeadline({ closes_at: at(5 * DAY), completed_at: at(3 * DAY), valid_until: at(4 * DAY) }, DAY)).toBe(6 * DAY);
  });
});

describe('deadlineWithoutGate', () => {
  const row = { closes_at: at(5 * DAY), completed_at: null, valid_until: at(10 * DAY) }; // deadline 11 days

  it('is the deadline arming would set while it is ahead', () => {
    expect(deadlineWithoutGate(row, DAY, 7 * DAY)).toBe(11 * DAY);
  });

  it('is retention from now for a coupon someone asks about at or past its deadline', () => {
    expect(deadlineWithoutGate(row, DAY, 11 * DAY)).toBe(12 * DAY);
    expect(deadlineWithoutGate(row, DAY, 20 * DAY)).toBe(21 * DAY);
  });

  it('is never (0) for a coupon that keeps its state', () => {
    expect(deadlineWithoutGate({ closes_at: null, completed_at: null, valid_until: at(10 * DAY) }, DAY, 20 * DAY)).toBe(0);
  });
});

describe('gateMetaOf', () => {
  const base: CouponRow = {
    id: '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70', name: 'n', total_quantity: 100, discount_amount: 5, opens_at: at(DAY),
    closes_at: at(5 * DAY), valid_until: at(10 * DAY), created_at: at(0), issued_count: 0, completed_at: null, paused_at: null,
  };

  it('writes the ledger row\'s window in ms and the retention deadline into meta', () => {
    expect(gateMetaOf(base, DAY)).toEqual({ total: 100, opensMs: DAY, closesMs: 5 * DAY, validUntilMs: 10 * DAY, expireAtMs: 11 * DAY, retentionMs: DAY, paused: false });
  });

  it('writes 0 for a window end the coupon does not have', () => {
    expect(gateMetaOf({ ...base, closes_at: null, valid_until: null }, DAY)).toEqual({ total: 100, opensMs: DAY, closesMs: 0, validUntilMs: 0, expireAtMs: 0, retentionMs: DAY, paused: false });
  });

  it('arms a coupon an operator paused as paused', () => {
    expect(gateMetaOf({ ...base, paused_at: at(2 * DAY) }, DAY).paused).toBe(true);
  });
});
