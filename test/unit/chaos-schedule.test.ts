// The chaos run's fault schedule (chaos/faults.ts): the same seed gives the same schedule, faults
// never overlap (restocks and the close excepted: they are an operator's calls at their moment), and
// every run, the short one in the suite included, meets each operator change (pause, restock, close)
// while users still arrive.
import { describe, expect, it } from 'vitest';
import { faultSchedule, lifecyclePlan, OVERLAPPING } from '../../chaos/faults.ts';
import { Prng } from '../../chaos/prng.ts';

const schedule = (seed: number, durationS: number, quantity = 200) => faultSchedule(new Prng(seed).fork('faults'), durationS * 1_000, quantity);

describe('the chaos fault schedule', () => {
  it('is the same for the same seed', () => {
    expect(schedule(20261206, 90)).toEqual(schedule(20261206, 90));
    expect(schedule(1, 40)).not.toEqual(schedule(2, 40));
  });

  it('applies one fault at a time, each after the previous one ended', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const faults = schedule(seed, 180).filter((f) => !OVERLAPPING.has(f.kind));
      for (let i = 1; i < faults.length; i++) expect(faults[i]!.atMs).toBeGreaterThanOrEqual(faults[i - 1]!.atMs + faults[i - 1]!.downMs);
    }
  });

  it('meets every operator change while users still arrive, for 40 s runs too', () => {
    for (const durationS of [40, 90, 180]) {
      for (let seed = 1; seed <= 300; seed++) {
        const faults = schedule(seed, durationS);
        const kinds = faults.map((f) => f.kind);
        expect(kinds.filter((k) => k === 'close'), `seed ${seed}, ${durationS} s`).toHaveLength(1);
        expect(kinds.filter((k) => k === 'pause').length).toBe(Math.max(1, Math.round(durationS / 60)));
        expect(kinds.filter((k) => k === 'restock').length).toBe(Math.max(1, Math.round(durationS / 90)));
        // Restocks and the close at their planned moment; a pause may wait for the fault before it,
        // but starts while users still arrive (until 85% of the run).
        for (const f of faults.filter((x) => OVERLAPPING.has(x.kind))) expect(f.atMs, `seed ${seed}, ${durationS} s`).toBeLessThan(durationS * 1_000 * 0.45);
        for (const f of faults.filter((x) => x.kind === 'pause')) expect(f.atMs + f.downMs, `seed ${seed}, ${durationS} s`).toBeLessThan(durationS * 1_000 * 0.85);
        // The short run still meets most infrastructure kinds.
        if (durationS >= 90) expect(new Set(kinds.filter((k) => !['pause', 'restock', 'close'].includes(k))).size, `seed ${seed}, ${durationS} s`).toBe(5);
      }
    }
  });

  it('restocks by a tenth to a quarter of the quantity, and holds a pause 1.5 to 6 s', () => {
    for (let seed = 1; seed <= 100; seed++) {
      for (const f of lifecyclePlan(new Prng(seed), 180_000, 200)) {
        if (f.kind === 'restock') expect(f.amount).toBeGreaterThanOrEqual(20);
        if (f.kind === 'restock') expect(f.amount).toBeLessThanOrEqual(50);
        if (f.kind === 'pause') expect(f.downMs).toBeGreaterThanOrEqual(1_500);
        if (f.kind === 'pause') expect(f.downMs).toBeLessThanOrEqual(6_000);
      }
    }
  });
});
