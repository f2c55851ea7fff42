// The sold-out view's Bloom filter: never a false "no", rarely a false "maybe", and a stated size.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BloomFilter } from '../../src/gate/bloom.ts';

describe('BloomFilter', () => {
  it('never says "certainly not" of an id it was given', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }), { minLength: 1, maxLength: 500 }), (ids) => {
      const filter = new BloomFilter(ids.length);
      for (const id of ids) filter.add(id);
      expect(ids.filter((id) => !filter.mayContain(id))).toEqual([]);
    }));
  });

  it.each([3, 10_000])('with %i winners, says "maybe" of about 1 in 10,000 other ids', (n) => {
    const filter = new BloomFilter(n);
    for (let i = 0; i < n; i++) filter.add(`winner-${i}`);
    let maybe = 0;
    for (let i = 0; i < 500_000; i++) if (filter.mayContain(`other-${i}`)) maybe++;
    expect(maybe / 500_000).toBeLessThan(0.0002);
  });

  it('holds under 2.5 bytes per winner: 24 KB for 10,000 and 2.4 MB for 1,000,000', () => {
    expect(new BloomFilter(10_000).bytes).toBe(23_964);
    expect(new BloomFilter(1_000_000).bytes).toBe(2_396_268);
    expect(new BloomFilter(3).bytes).toBe(128);
  });
});
