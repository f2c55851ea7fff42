// When a finished coupon's Redis state may go (docs/architecture.md#retention), as a pure rule.
import { describe, expect, it } from 'vitest';
import { retentionDeadline } from '../../src/domain/retention.ts';

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
});
