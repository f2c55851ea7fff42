// The rebuild's gap rule (src/gate/gate-load.ts) with no Redis: every seq below the highest one the
// ledger holds that no ledger row holds goes back to the free list, found page by page and sent a
// chunk at a time, and the counts and replies of gate-load.lua are honoured.
import { describe, expect, it } from 'vitest';
import { LoadInterrupted } from '../../src/domain/errors.ts';
import { GateLoad } from '../../src/gate/gate-load.ts';
import type { GateMeta } from '../../src/gate/gate-scripts.ts';
import type { LedgerRow } from '../../src/store/coupons.ts';
import type { ScriptArg } from '../../src/store/scripts.ts';
import { fenceBoundMs, SETTLE_MARGIN_MS } from '../../src/store/loss-guard.ts';

const TTL = 600_000; // ten minutes, the staging TTL
const meta: GateMeta = { total: 30, opensMs: 1_000, closesMs: 2_000, validUntilMs: 3_000, expireAtMs: 4_000, retentionMs: 500 };
const row = (seq: number): LedgerRow => ({ userId: `u${seq}`, seq, issuedAtMs: 100 + seq });
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A stand-in for gate-load.lua: records each call's arguments and answers `replies[n]` (default 1, done). */
/** The calls, with arm's epoch (fresh and random, its tenth argument) left out. */
const withoutEpoch = (calls: ScriptArg[][]) => calls.map((c) => (c[0] === 'arm' ? [...c.slice(0, 9), ...c.slice(10)] : c));

function script(replies: Record<number, number> = {}) {
  const calls: ScriptArg[][] = [];
  const run = (args: ScriptArg[]) => { calls.push(args); return Promise.resolve(replies[calls.length] ?? 1); };
  return { calls, run };
}

describe('a new coupon\'s load', () => {
  it('is one arm call: meta, no seqs handed out, no count, a fresh epoch, not paused', async () => {
    const s = script();
    expect(await new GateLoad(meta, s.run).arm()).toBe(true);
    expect(s.calls).toHaveLength(1);
    expect(withoutEpoch(s.calls)).toEqual([['arm', 30, 1_000, 2_000, 3_000, 0, 4_000, 500, '', '0', 0]]);
    expect(s.calls[0]![9]).toMatch(UUID);
  });

  it('arms paused when an operator paused the coupon', async () => {
    const s = script();
    await new GateLoad({ ...meta, paused: true }, s.run).arm();
    expect(withoutEpoch(s.calls)).toEqual([['arm', 30, 1_000, 2_000, 3_000, 0, 4_000, 500, '', '1', 0]]);
  });
});

describe('a rebuild', () => {
  it('sends the rows, then the seqs between them that no row holds, then arms with the highest seq and the count written', async () => {
    const s = script();
    const load = new GateLoad(meta, s.run, { epoch: 'E1' });
    expect(await load.rows([row(3), row(4), row(7)])).toBe(true);
    expect(await load.rows([row(8), row(10)])).toBe(true);
    expect(await load.arm()).toBe(true);
    expect(withoutEpoch(s.calls)).toEqual([
      ['begin', TTL, 'E1'],
      ['rows', TTL, 4_000, 'u3', 3, 103, 'u4', 4, 104, 'u7', 7, 107],
      ['rows', TTL, 4_000, 'u8', 8, 108, 'u10', 10, 110],
      // 1 and 2 before the first row, 5 and 6 between 4 and 7, 9 between 8 and 10.
      ['free', TTL, 1, 2, 5, 6, 9],
      // Highest seq 10; 5 rows and 5 free seqs written; a marker that names no time: no floor.
      ['arm', 30, 1_000, 2_000, 3_000, 10, 4_000, 500, 10, '0', 0],
    ]);
  });

  it('arms with a reservation floor SETTLE_MARGIN_MS before the loss marker it waited for (the fence\'s bound)', async () => {
    const s = script();
    const load = new GateLoad(meta, s.run, { epoch: '1800000000000' });
    await load.rows([row(1)]);
    await load.arm();
    expect(s.calls.at(-1)!.at(-1)).toBe(1_800_000_000_000 - SETTLE_MARGIN_MS);
    expect(fenceBoundMs('1800000000000')).toBe(1_800_000_000_000 - SETTLE_MARGIN_MS);
    expect([fenceBoundMs(''), fenceBoundMs(undefined), fenceBoundMs('E1'), fenceBoundMs('1000')]).toEqual([0, 0, 0, 0]);
  });

  it('sends no free seqs when the ledger has no gap, and begins with no epoch when the ledger is final', async () => {
    const s = script();
    const load = new GateLoad(meta, s.run, {});
    await load.rows([row(1), row(2), row(3)]);
    await load.arm();
    expect(withoutEpoch(s.calls)).toEqual([
      ['begin', TTL, ''],
      ['rows', TTL, 4_000, 'u1', 1, 101, 'u2', 2, 102, 'u3', 3, 103],
      ['arm', 30, 1_000, 2_000, 3_000, 3, 4_000, 500, 3, '0', 0],
    ]);
  });

  it('sends at most 1,000 rows or free seqs per call, and free seqs as soon as 1,000 are found', async () => {
    const s = script();
    const rows = [...Array.from({ length: 1_500 }, (_, i) => row(i + 1)), row(4_001)];
    const load = new GateLoad(meta, s.run, {});
    await load.rows(rows);
    await load.arm();
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    expect(s.calls.map((c) => [c[0], c.length])).toEqual([
      ['begin', 3],
      ['rows', 3 + 3 * 1_000], // seqs 1..1000
      ['rows', 3 + 3 * 501], // seqs 1001..1500 and 4001
      ['free', 2 + 1_000], // 1501..2500, sent while the page is read
      ['free', 2 + 1_000], // 2501..3500
      ['free', 2 + 500], // 3501..4000, sent by arm
      ['arm', 12],
    ]);
    expect(s.calls[3]!.slice(2)).toEqual(range(1_501, 2_500));
    expect(s.calls[4]!.slice(2)).toEqual(range(2_501, 3_500));
    expect(s.calls[5]!.slice(2)).toEqual(range(3_501, 4_000));
    // Highest seq 4001; 1,501 rows and 2,500 free seqs written.
    expect(s.calls[6]!.slice(5, 9)).toEqual([4_001, 4_000, 500, 4_001]);
  });

  it('refuses ledger rows out of seq order', async () => {
    const load = new GateLoad(meta, script().run, {});
    await load.rows([row(2), row(5)]);
    await expect(load.rows([row(5)])).rejects.toThrow('ledger rows out of seq order: 5 after 5');
    await expect(new GateLoad(meta, script().run).rows([row(4), row(3)])).rejects.toThrow('ledger rows out of seq order: 3 after 4');
  });

  it('stops, sending nothing more, once another process armed the gate (the script answers 0)', async () => {
    const s = script({ 2: 0 });
    const load = new GateLoad(meta, s.run, { epoch: 'E1' });
    expect(await load.rows([row(2)])).toBe(false);
    expect(await load.rows([row(4)])).toBe(false);
    expect(await load.arm()).toBe(false);
    expect(s.calls.map((c) => c[0])).toEqual(['begin', 'rows']);
  });

  it('stops when another process armed the gate before it began', async () => {
    const s = script({ 1: 0 });
    expect(await new GateLoad(meta, s.run, { epoch: 'E1' }).rows([row(1)])).toBe(false);
    expect(s.calls.map((c) => c[0])).toEqual(['begin']);
  });

  it('throws LoadInterrupted when the script finds Redis lost state meanwhile (it answers -1)', async () => {
    const load = new GateLoad(meta, script({ 4: -1 }).run, { epoch: 'E1' });
    await load.rows([row(2)]);
    await load.rows([row(3)]);
    const err = await load.arm().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoadInterrupted);
    expect((err as Error).message).toBe("Redis lost the coupon's gate state while it was loaded from the ledger; the load starts over");
  });
});
