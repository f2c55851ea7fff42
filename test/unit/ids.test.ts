// The id rules, as pure functions: one canonical spelling per coupon, exact user and order ids.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DomainError } from '../../src/domain/errors.ts';
import { canonicalCouponId, idProblem, requireCouponId } from '../../src/domain/ids.ts';

describe('coupon ids', () => {
  it('every letter case of a UUID has the same canonical, lower-case spelling', () => {
    fc.assert(fc.property(fc.uuid(), fc.array(fc.boolean(), { minLength: 36, maxLength: 36 }), (id, flips) => {
      const spelled = [...id].map((c, i) => (flips[i] ? c.toUpperCase() : c.toLowerCase())).join('');
      expect(canonicalCouponId(spelled)).toBe(id.toLowerCase());
    }));
  });

  it('two different UUIDs never share a canonical spelling', () => {
    fc.assert(fc.property(fc.uuid(), fc.uuid(), (a, b) => {
      fc.pre(a.toLowerCase() !== b.toLowerCase());
      expect(canonicalCouponId(a.toUpperCase())).not.toBe(canonicalCouponId(b));
    }));
  });

  it.each([
    '', 'not-a-uuid', '3f2b6c1e9a0d4c5e8f1a2b3c4d5e6f70', '{3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70}',
    'urn:uuid:3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70', ' 3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70', '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70\n',
    '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f7', '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f7g', '３f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70',
  ])('%j is not a coupon id: INVALID_FIELD naming the field', (value) => {
    expect(canonicalCouponId(value)).toBeUndefined();
    expect(() => requireCouponId('coupon_id', value)).toThrow(DomainError);
    try { requireCouponId('coupon_id', value); } catch (err) {
      expect((err as DomainError).reason).toBe('INVALID_FIELD');
      expect((err as DomainError).field).toBe('coupon_id');
    }
  });
});

describe('user and order ids', () => {
  it('are exact: a valid id is kept as it is, so ids that differ in case are two ids', () => {
    expect(idProblem('Bob')).toBeUndefined();
    expect(idProblem('bob')).toBeUndefined();
  });

  it.each(['a|b', 'a{b', 'a}b', 'a\nb', 'e\u0301'])('%j is refused: it could collide with a separator or another spelling', (value) => {
    expect(idProblem(value)).toBeDefined();
  });
});
