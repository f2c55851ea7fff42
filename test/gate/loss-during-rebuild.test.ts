// Redis loses everything again while a coupon's state is being rebuilt from the ledger (the gate)
// or loaded (the redemption state). Whatever call of the load the loss comes before, nothing may be
// armed or marked loaded over what survived: a gate missing winners or free seqs hands out held
// seqs and seqs past the total, and a redemption state missing cancelled orders lets a cancelled
// order redeem. The load starts over, waiting again as after any loss, and then restores everything.
// Real Redis of this file's own, restarted with SIGKILL before the n-th load call; the ledger in
// the shared PostgreSQL.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { DomainError } from '../../src/domain/errors.ts';
import type { Alerter } from '../../src/events/alert.ts';
import type { BatchingPublisher } from '../../src/events/publisher.ts';
import { LossGuard } from '../../src/store/loss-guard.ts';
import { GateRebuilder } from '../../src/gate/rebuild.ts';
import { Redemption } from '../../src/redemption/redemption.ts';
import { ActiveCoupons } from '../../src/store/active-coupons.ts';
import { couponKeys, type RebuiltState } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateReserve } from '../../src/gate/gate-scripts.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { db as newDb, testLog } from '../support/stack.ts';

const SETTLE_MS = 300;
const db = newDb();
let redis: OwnRedis;
let r: Redis;
const created: string[] = [];

beforeAll(async () => { redis = await startOwnRedis(); r = redis.client(); });
afterAll(async () => {
  for (const id of created) {
    await db('redemption_cancellations').where({ coupon_id: id }).delete();
    await db('user_coupons').where({ coupon_id: id }).delete();
    await db('coupons').where({ id }).delete();
  }
  await db.destroy();
  await redis?.stop();
});

/** A client whose calls of `script` are counted; before the n-th, `before(n)` runs. */
function counting(client: Redis, script: string, before: (n: number) => Promise<void>): Redis {
  let calls = 0;
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const fn = value as (...a: unknown[]) => unknown;
      if (prop !== script) return fn.bind(target);
      return async (...args: unknown[]) => {
        await before(++calls);
        return fn.apply(target, args);
      };
    },
  });
}

/** A loss: Redis restarts, empty. `before(n)` for `counting`, losing everything before call `at`. */
function lossBefore(at: number) {
  const seen = { calls: 0 };
  return { seen, before: async (n: number) => { seen.calls = n; if (n === at) await redis.restart(); } };
}

const quietAlerter = { notify: () => Promise.resolve() } as unknown as Alerter;
const guardFor = (state: RebuiltState) => new LossGuard({
  redis: r, scripts: new CouponScripts(r), db, alerter: quietAlerter, log: testLog, state, settleMs: SETTLE_MS,
  consumerCaughtUp: () => Promise.resolve(true), topic: `loss-during-rebuild-${randomUUID()}`, dltTopic: 'dlt', blockedAlert: 'blocked',
});

async function ledgerCoupon(total: number): Promise<string> {
  const id = randomUUID();
  created.push(id);
  await db('coupons').insert({ id, name: 'loss during rebuild', total_quantity: total, opens_at: new Date(Date.now() - 60_000) });
  return id;
}

/** Retries what answers BACKEND_UNAVAILABLE (the wait after a loss), as a caller would; the messages it heard. */
async function untilAvailable<T>(call: () => Promise<T>): Promise<{ value: T; unavailable: string[] }> {
  const unavailable: string[] = [];
  for (let i = 0; ; i++) {
    try {
      return { value: await call(), unavailable };
    } catch (err) {
      if (!(err instanceof DomainError) || err.reason !== 'BACKEND_UNAVAILABLE' || i > 100) throw err;
      unavailable.push(err.message);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * Calls `call` as a retrying caller would, through the wait after the first loss, until the load
 * has met the loss injected before its call `at`; the outcome of that call.
 */
async function duringLoss(seen: { calls: number }, at: number, call: () => Promise<unknown>): Promise<unknown> {
  for (let i = 0; ; i++) {
    const outcome = await call().then(() => 'OK', (err: unknown) => err);
    if (seen.calls >= at) return outcome;
    if (!(outcome instanceof DomainError) || outcome.reason !== 'BACKEND_UNAVAILABLE' || i > 100) throw new Error(`the load never reached the loss: ${String(outcome)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('Redis loses everything again during a gate rebuild', () => {
  // Seqs 1..20 minus gaps, pages of 4 rows: several 'rows' and 'free' calls.
  const TOTAL = 25;
  const gaps = [1, 2, 7, 11, 12, 18];
  const seqs = Array.from({ length: 20 }, (_, i) => i + 1).filter((s) => !gaps.includes(s));

  it('before any call of the load: the gate is never armed over what survived, and once rebuilt it is whole', { timeout: 120_000 }, async () => {
    // How many calls one uninterrupted rebuild makes.
    const probe = await ledgerCoupon(TOTAL);
    await db.raw(`INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at) SELECT ?, 'u' || s, s, now() FROM unnest(?::bigint[]) AS s`, [probe, seqs]);
    const dry = lossBefore(0);
    const dryClient = counting(r, 'gateLoad', dry.before);
    await untilAvailable(() => new GateRebuilder({ db, redis: dryClient, scripts: new CouponScripts(dryClient), log: testLog, guard: guardFor('gate'), ledgerPageSize: 4 }).arm(probe, 'anyone'));
    expect(dry.seen.calls).toBeGreaterThanOrEqual(5);

    for (let at = 1; at <= dry.seen.calls; at++) {
      const where = `Redis lost before load call ${at} of ${dry.seen.calls}`;
      const couponId = await ledgerCoupon(TOTAL);
      await db.raw(`INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at) SELECT ?, 'u' || s, s, now() FROM unnest(?::bigint[]) AS s`, [couponId, seqs]);
      const loss = lossBefore(at);
      const client = counting(r, 'gateLoad', loss.before);
      const rebuilder = new GateRebuilder({ db, redis: client, scripts: new CouponScripts(client), log: testLog, guard: guardFor('gate'), ledgerPageSize: 4 });
      const k = couponKeys(couponId);

      // Callers retry through the wait after the first loss, until the load meets the second one.
      const during = await duringLoss(loss.seen, at, () => rebuilder.arm(couponId, 'anyone'));
      // Whatever that call did, the gate is not armed over what survived ...
      if (await r.exists(k.meta)) {
        expect(await r.hgetall(k.winners), where).toEqual(Object.fromEntries(seqs.map((s) => [`u${s}`, String(s)])));
        expect(await r.lrange(k.free, 0, -1), where).toEqual(gaps.map(String));
        expect(await r.get(k.next), where).toBe('20');
      }
      // ... and the loss is noticed afresh: the rebuild waits again before arming.
      expect(during, where).toMatchObject({ reason: 'BACKEND_UNAVAILABLE' });
      const { value } = await untilAvailable(() => rebuilder.arm(couponId, 'anyone'));
      expect(value, where).toBe('ARMED');
      expect(await r.hgetall(k.winners), where).toEqual(Object.fromEntries(seqs.map((s) => [`u${s}`, String(s)])));
      expect(await r.lrange(k.free, 0, -1), where).toEqual(gaps.map(String));
      expect(await r.get(k.next), where).toBe('20');
      expect(await r.keys(`coupon:{${couponId}}:rebuild:*`), where).toEqual([]);
      // What users see: winners keep their seqs; newcomers get exactly the rest, never past the total.
      const scripts = new CouponScripts(r);
      expect(await gateReserve(scripts, couponId, 'u13', Date.now()), where).toMatchObject({ status: 'EXISTING', seq: 13 });
      const won: number[] = [];
      for (let i = 0; i < TOTAL - seqs.length; i++) {
        const res = await gateReserve(scripts, couponId, `new-${i}`, Date.now());
        if (res.status === 'RESERVED') won.push(res.seq);
      }
      expect(won.sort((a, b) => a - b), where).toEqual([...gaps, 21, 22, 23, 24, 25]);
      expect(await gateReserve(scripts, couponId, 'one-too-many', Date.now()), where).toEqual({ status: 'SOLD_OUT' });
    }
  });
});

describe('Redis loses everything again while the redemption state is loaded', () => {
  it('before any call of the load: the coupon is never marked loaded over what survived, and a cancelled order still cannot redeem', { timeout: 120_000 }, async () => {
    // 'buyer' redeemed with order-1, then cancelled it; 'other' redeemed with order-9.
    const ledger = async () => {
      const couponId = await ledgerCoupon(5);
      await db('user_coupons').insert([
        { coupon_id: couponId, user_id: 'buyer', seq: 1, requested_at: new Date(), order_id: null, redemption_version: 2 },
        { coupon_id: couponId, user_id: 'other', seq: 2, requested_at: new Date(), order_id: 'order-9', redeemed_at: new Date(), redemption_version: 1 },
      ]);
      await db('redemption_cancellations').insert({ coupon_id: couponId, user_id: 'buyer', order_id: 'order-1', cancelled_at: new Date() });
      return couponId;
    };
    const redemptionWith = (client: Redis) => {
      const active = new ActiveCoupons(client, `gate:active:test-${randomUUID()}`);
      return new Redemption({
        db, redis: client, scripts: new CouponScripts(client, { active }), active, log: testLog, guard: guardFor('redemption'),
        publisher: { send: () => Promise.resolve() } as unknown as BatchingPublisher, encoder: { encode: () => Buffer.from('event') }, topic: 'test',
      });
    };

    const dry = lossBefore(0);
    const probe = await ledger();
    await expect(untilAvailable(() => redemptionWith(counting(r, 'restoreRedemption', dry.before)).redeem(probe, 'buyer', 'order-1'))).rejects.toMatchObject({ reason: 'REDEMPTION_CANCELLED' });
    expect(dry.seen.calls).toBeGreaterThanOrEqual(3);

    for (let at = 1; at <= dry.seen.calls; at++) {
      const where = `Redis lost before load call ${at} of ${dry.seen.calls}`;
      const couponId = await ledger();
      const loss = lossBefore(at);
      const redemption = redemptionWith(counting(r, 'restoreRedemption', loss.before));
      const k = couponKeys(couponId);

      const during = await duringLoss(loss.seen, at, () => redemption.redeem(couponId, 'buyer', 'order-1'));
      // Whatever that call did, the coupon is not marked loaded over what survived ...
      if (await r.exists(k.redeemLoaded)) {
        expect(await r.smembers(k.cancelled), where).toEqual(['buyer|order-1']);
        expect(await r.hget(k.redeem, 'other') ?? '(none)', where).toMatch(/^R\|order-9\|1\|/);
      }
      // ... and the loss is noticed afresh: the load waits again.
      expect(during, where).toMatchObject({ reason: 'BACKEND_UNAVAILABLE' });
      // Then the ledger's answers: the cancelled order never redeems, the other user's coupon is taken.
      await expect(untilAvailable(() => redemption.redeem(couponId, 'buyer', 'order-1')), where).rejects.toMatchObject({ reason: 'REDEMPTION_CANCELLED' });
      await expect(untilAvailable(() => redemption.redeem(couponId, 'other', 'order-10')), where).rejects.toMatchObject({ reason: 'COUPON_ALREADY_REDEEMED' });
      expect(await r.smembers(k.cancelled), where).toEqual(['buyer|order-1']);
      expect(await r.keys(`coupon:{${couponId}}:redeem-load:*`), where).toEqual([]);
    }
  });
});
