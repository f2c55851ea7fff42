// The index of active coupons that the recovery loops walk (store/active-coupons.ts):
// a coupon is marked before it can hold a pending reservation or an outbox entry, stays while it
// holds one, and leaves once it has been idle for a while, so the loops never walk old coupons.
// Driven here with an injected clock, on a Redis of the test's own.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BatchingPublisher } from '../../src/events/publisher.ts';
import { recoverStaleReservations, type GateRecoveryDeps } from '../../src/gate/recovery.ts';
import { ActiveCoupons, IDLE_MS } from '../../src/store/active-coupons.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateArm, gateConfirm, gateReserve, type GateMeta } from '../../src/gate/gate-scripts.ts';
import { startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { testLog } from '../support/stack.ts';

let redis: PrivateRedis;
beforeAll(async () => { redis = await startPrivateRedis(); });
afterAll(async () => { await redis?.stop(); });

const NOW = Date.now();
const meta: GateMeta = { total: 3, opensMs: 0, closesMs: 0, validUntilMs: 0, expireAtMs: 0, retentionMs: 1_000 };

function setup() {
  let clock = NOW;
  const key = `gate:active:test-${randomUUID()}`;
  const active = new ActiveCoupons(redis.client, key, () => clock);
  const scripts = new CouponScripts(redis.client, { active });
  const sent: { key: string }[] = [];
  const publisher = { send: (_topic: string, m: { key: string }) => { sent.push(m); return Promise.resolve(); } } as unknown as BatchingPublisher;
  const deps: GateRecoveryDeps = { redis: redis.client, scripts, active, publisher, encoder: { encode: () => Buffer.from('record') }, topic: 'test', log: testLog, now: () => NOW };
  const coupon = async () => { const id = randomUUID(); await gateArm(scripts, id, meta); return id; };
  const members = async () => {
    const flat = await redis.client.zrange(key, '0', '-1', 'WITHSCORES');
    const out: Record<string, number> = {};
    for (let i = 0; i < flat.length; i += 2) out[flat[i]!] = Number(flat[i + 1]);
    return out;
  };
  return { key, active, scripts, deps, sent, coupon, members, at: (ms: number) => { clock = ms; } };
}

describe('marking a coupon active', () => {
  it('happens before a reservation joins the pending journal, and never for a call that cannot reserve', async () => {
    const t = setup();
    expect(await gateReserve(t.scripts, randomUUID(), 'u', NOW)).toEqual({ status: 'NOT_FOUND' });
    const soldOut = await t.coupon();
    await gateArm(t.scripts, soldOut, meta);
    for (const u of ['a', 'b', 'c']) expect((await gateReserve(t.scripts, soldOut, u, NOW)).status).toBe('RESERVED');
    // Those three marked it (once: one mark per coupon per second per process).
    expect(await t.members()).toEqual({ [soldOut]: NOW });
    await redis.client.zrem(t.key, soldOut);
    t.at(NOW + 5_000);
    expect(await gateReserve(t.scripts, soldOut, 'd', NOW + 5_000)).toEqual({ status: 'SOLD_OUT' });
    expect(await gateReserve(t.scripts, soldOut, 'a', NOW + 5_000)).toMatchObject({ status: 'EXISTING', seq: 1 });
    expect(await t.members()).toEqual({});

    const open = await t.coupon();
    expect(await gateReserve(t.scripts, open, 'e', NOW + 5_000)).toMatchObject({ status: 'RESERVED', seq: 1 });
    expect(await t.members()).toEqual({ [open]: NOW + 5_000 });
    expect(await redis.client.zscore(couponKeys(open).pending, 'e')).toBe(String(NOW + 5_000));
  });
});

describe('a recovery pass', () => {
  it('walks only the index: republishes a crashed reservation, keeps what is pending or recent, and drops a coupon idle for IDLE_MS', async () => {
    const t = setup();
    const old = NOW - IDLE_MS - 60_000;
    t.at(old);
    const idle = await t.coupon();
    await gateReserve(t.scripts, idle, 'done', old);
    await gateConfirm(t.scripts, idle, 'done', 1, old);
    const crashed = await t.coupon();
    await gateReserve(t.scripts, crashed, 'victim', old);
    const withOutbox = await t.coupon();
    await gateReserve(t.scripts, withOutbox, 'buyer', old);
    await gateConfirm(t.scripts, withOutbox, 'buyer', 1, old);
    await redis.client.zadd(couponKeys(withOutbox).outbox, 0, `buyer\nR|order-1|1|${old}`);
    t.at(NOW - 10_000);
    const recent = await t.coupon();
    await gateReserve(t.scripts, recent, 'fresh', NOW - 10_000);
    await gateConfirm(t.scripts, recent, 'fresh', 1, NOW - 10_000);
    // Created, never reserved: never indexed, never visited.
    const untouched = await t.coupon();

    expect(await recoverStaleReservations(t.deps, 30_000)).toEqual({ visited: 4, republished: 1, dropped: 1 });
    expect(t.sent.map((m) => m.key)).toEqual([crashed]);
    expect(await redis.client.zcard(couponKeys(crashed).pending)).toBe(0);
    expect(Object.keys(await t.members()).sort()).toEqual([crashed, withOutbox, recent].sort());

    // Next pass: the recovered coupon has nothing left and goes too; the outbox keeps its coupon.
    expect(await recoverStaleReservations(t.deps, 30_000)).toEqual({ visited: 3, republished: 0, dropped: 1 });
    expect(Object.keys(await t.members()).sort()).toEqual([withOutbox, recent].sort());
    expect(await t.members()).not.toHaveProperty(untouched);
  });

  it('never drops a coupon marked again after it was found idle', async () => {
    const t = setup();
    const old = NOW - IDLE_MS - 1_000;
    t.at(old);
    const id = await t.coupon();
    await gateReserve(t.scripts, id, 'u1', old);
    await gateConfirm(t.scripts, id, 'u1', 1, old);
    // The pass found it idle; before it drops it, a request marks it and is about to reserve.
    t.at(NOW);
    await t.active.touch(id);
    expect(await t.active.dropIdle([id], NOW - IDLE_MS)).toBe(0);
    expect(await t.members()).toEqual({ [id]: NOW });
  });

  it('moves the index the old code kept (every coupon ever created) into this one, and still recovers what it holds', async () => {
    const t = setup();
    const legacy = `gate:coupons:test-${randomUUID()}`;
    const oldScripts = new CouponScripts(redis.client); // marks nothing, as the old code did
    const stuck = randomUUID();
    await gateArm(oldScripts, stuck, meta);
    await gateReserve(oldScripts, stuck, 'victim', NOW - 60_000);
    const quiet = randomUUID();
    await gateArm(oldScripts, quiet, meta);
    await redis.client.sadd(legacy, stuck, quiet);

    expect(await recoverStaleReservations({ ...t.deps, legacyIndexKey: legacy }, 30_000)).toEqual({ visited: 2, republished: 1, dropped: 1 });
    expect(t.sent.map((m) => m.key)).toEqual([stuck]);
    expect(await redis.client.exists(legacy)).toBe(0);
    expect(Object.keys(await t.members())).toEqual([stuck]);
  });
});
