// The gate's batched confirms (gate.ts Confirms) against a real redis-server, with a publisher
// whose acknowledgements the test controls (a whole batch settles in one turn, as a publisher batch
// does): chunking, repeats and a release in the same turn, a confirm call Redis never answers, and
// the recovery loop confirming what that call left. (Written by an independent review.)
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gate } from '../../src/gate/gate.ts';
import { gateArm } from '../../src/gate/gate-scripts.ts';
import { recoverStaleReservations } from '../../src/gate/recovery.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts, RedisCallUnsettled } from '../../src/store/scripts.ts';
import { createLogger } from '../../src/log.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';

let redis: OwnRedis;
beforeAll(async () => { redis = await startOwnRedis(); });
afterAll(async () => { await redis?.stop(); });
const log = createLogger('batched-confirms', 'error');

class HeldPublisher {
  held: { resolve: () => void; reject: (e: Error) => void; user: string }[] = [];
  sent: string[] = [];
  send(_topic: string, _m: unknown): Promise<void> { return new Promise((resolve, reject) => { this.held.push({ resolve, reject, user: '' }); }); }
  /** Settles every held send in one synchronous loop (one turn), failing those `fail` picks. */
  settleAll(fail: (i: number) => boolean = () => false) { const h = this.held; this.held = []; h.forEach((x, i) => (fail(i) ? x.reject(Object.assign(new Error('KafkaJSRequestTimeoutError'), { name: 'KafkaJSRequestTimeoutError' })) : x.resolve())); return h.length; }
}

async function setup(total: number, opts: { failConfirm?: (call: number) => boolean } = {}) {
  const r = redis.client();
  const scripts = new CouponScripts(r);
  const couponId = randomUUID();
  const now = Date.now();
  expect(await gateArm(scripts, couponId, { total, opensMs: now - 1000, closesMs: 0, validUntilMs: 0, expireAtMs: 0, retentionMs: 86_400_000 })).toBe(true);
  const confirmCalls: number[] = [];
  const run = scripts.run.bind(scripts);
  scripts.run = ((name: string, target: never, args: readonly (string | number)[]) => {
    if (name === 'gateConfirm') {
      confirmCalls.push(args.length / 3);
      if (opts.failConfirm?.(confirmCalls.length)) return Promise.reject(new RedisCallUnsettled('injected: confirm unsettled'));
    }
    return run(name as never, target, args);
  });
  const publisher = new HeldPublisher();
  const gate = new Gate({
    redis: r, scripts, publisher: publisher as never, encoder: { encode: () => Buffer.alloc(0) }, topic: 't',
    rebuilder: { arm: () => { throw new Error('no rebuild in this test'); } } as never, log, publishTimeoutMs: 1_500, recoveryStaleMs: 60_000,
  });
  const k = couponKeys(couponId);
  return { r, scripts, couponId, gate, publisher, confirmCalls, k };
}
const settled = <T>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: Error & { reason?: string }) => ({ ok: false as const, e: e.reason ?? e.message }));
const until = async (f: () => boolean, ms = 10_000) => { const end = Date.now() + ms; while (!f()) { if (Date.now() > end) throw new Error('timeout'); await new Promise((r) => setTimeout(r, 5)); } };

describe('batched confirms', () => {
  it('2 500 acknowledgements in one turn: three script calls, every pending entry gone, every winner OK with a distinct seq', { timeout: 60_000 }, async () => {
    const { gate, publisher, confirmCalls, r, k, couponId } = await setup(3000);
    const users = Array.from({ length: 2500 }, (_, i) => `u${i}`);
    const calls = users.map((u) => settled(gate.issue(couponId, u)));
    await until(() => publisher.held.length === 2500);
    publisher.settleAll();
    const out = await Promise.all(calls);
    expect(out.filter((o) => !o.ok)).toEqual([]);
    const seqs = out.map((o) => (o.ok ? o.v.seq : -1));
    expect(new Set(seqs).size).toBe(2500);
    expect(confirmCalls).toEqual([1000, 1000, 500]);
    expect(await r.zcard(k.pending)).toBe(0);
    const winners = await r.hgetall(k.winners);
    users.forEach((u, i) => expect(winners[u]).toBe(String(seqs[i])));
  });

  it('a batch with failures, repeats and a release in the same turn; a failing batch call; recovery confirming the same reservations', { timeout: 60_000 }, async () => {
    const { gate, publisher, confirmCalls, r, k, couponId, scripts } = await setup(50, { failConfirm: (n) => n === 2 });
    // Batch 1: 10 users, each asked twice at once (a repeat waits for the first); user 3's publish fails (released).
    const users = Array.from({ length: 10 }, (_, i) => `a${i}`);
    const first = users.map((u) => settled(gate.issue(couponId, u)));
    await until(() => publisher.held.length === 10);
    const repeats = users.map((u) => settled(gate.issue(couponId, u)));
    await new Promise((res) => setTimeout(res, 50));
    publisher.settleAll((i) => i === 3);
    const f = await Promise.all(first);
    const rep = await Promise.all(repeats.slice(0, 3).concat(repeats.slice(4)));
    expect(f.map((o) => (o.ok ? `ok ${o.v.seq}` : o.e))).toEqual(['ok 1', 'ok 2', 'ok 3', 'PUBLISH_FAILED', 'ok 5', 'ok 6', 'ok 7', 'ok 8', 'ok 9', 'ok 10']);
    expect(rep.map((o) => (o.ok ? `ok ${o.v.seq}` : o.e))).toEqual(['ok 1', 'ok 2', 'ok 3', 'ok 5', 'ok 6', 'ok 7', 'ok 8', 'ok 9', 'ok 10']);
    // user a3's repeat: it waited, found its slot released, and tried again as a fresh request
    await until(() => publisher.held.length === 1);
    // Batch 2 (the injected failing script call): a3's retry and 4 new users acknowledged together
    const more = ['b0', 'b1', 'b2', 'b3'].map((u) => settled(gate.issue(couponId, u)));
    await until(() => publisher.held.length === 5);
    publisher.settleAll();
    const failed = await Promise.all([repeats[3]!, ...more]);
    expect(failed.map((o) => (o.ok ? 'ok' : o.e))).toEqual(['injected: confirm unsettled', 'injected: confirm unsettled', 'injected: confirm unsettled', 'injected: confirm unsettled', 'injected: confirm unsettled']);
    expect(await r.zcard(k.pending)).toBe(5);
    const held = await r.hgetall(k.winners);
    // Recovery (another process's loop) republishes and confirms them; the gate's own retries then say OK with the same seqs.
    const recoveryPub = { send: () => Promise.resolve() };
    const pass = await recoverStaleReservations({ redis: r, scripts, active: { drainLegacy: () => Promise.resolve(), pages: function* () { yield [{ couponId, lastActiveMs: Date.now() }]; }, dropIdle: () => Promise.resolve(0) } as never, publisher: recoveryPub as never, encoder: { encode: () => Buffer.alloc(0) }, topic: 't', log }, 0);
    expect(pass.republished).toBe(5);
    expect(await r.zcard(k.pending)).toBe(0);
    const again = await Promise.all(['a3', 'b0', 'b1', 'b2', 'b3'].map((u) => settled(gate.issue(couponId, u))));
    expect(again.map((o) => (o.ok ? String(o.v.seq) : o.e))).toEqual(['a3', 'b0', 'b1', 'b2', 'b3'].map((u) => held[u]));
    // every seq held once
    const all = Object.values(await r.hgetall(k.winners));
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBe(14);
    // One script call per acknowledged batch: the 9 publishes that succeeded, then the 5 of the
    // failed call; then the recovery loop's own confirms of those 5 (one call each).
    expect(confirmCalls).toEqual([9, 5, 1, 1, 1, 1, 1]);
  });
});
