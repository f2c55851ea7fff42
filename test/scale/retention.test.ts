// Retention (docs/architecture.md#retention): a finished coupon's Redis state expires
// REDIS_RETENTION after it can no longer be issued or redeemed, every key at the same moment, and
// afterwards every answer comes from the ledger without arming the gate again. On a Redis of the
// test's own (KEYS is safe there), through the real coupon-api and coupon-issuer.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CouponStatus, UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { loadConfig } from '../../src/config.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { afterRebuild, callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { uniqueEnv, until } from '../support/stack.ts';

const RETENTION_MS = 2_000;
let redis: PrivateRedis;
let api: ServiceProcess;
let issuer: ServiceProcess;
let client: CouponClient;

beforeAll(async () => {
  redis = await startPrivateRedis();
  const env = { ...uniqueEnv('retention'), REDIS_URL: redis.url, REDIS_RETENTION: '2s' };
  [api, issuer] = await Promise.all([startService('api', env), startService('issuer', env)]);
  client = couponClient(api.address);
});
afterAll(async () => {
  client?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  await redis?.stop();
});

/** Every key of the coupon with its expiry time (ms since the epoch; -1 = none). */
async function expiries(couponId: string): Promise<Record<string, number>> {
  const keys = await redis.client.keys(`coupon:{${couponId}}:*`);
  const at = await Promise.all(keys.map((key) => redis.client.call('PEXPIRETIME', key) as Promise<number>));
  return Object.fromEntries(keys.map((key, i) => [key.slice(key.lastIndexOf(':') + 1), at[i]!]));
}

const issued = (couponId: string, userId: string) => until(`${userId} ISSUED`, async () =>
  (await client.getUserCoupon({ couponId, userId })).userCoupon!.state === UserCouponState.ISSUED);
const sleepUntil = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms - Date.now())));

describe('REDIS_RETENTION', () => {
  it('is a duration (7 days unless set)', () => {
    expect(loadConfig({}).REDIS_RETENTION).toBe(7 * 86_400_000);
    expect(loadConfig({ REDIS_RETENTION: '36h' }).REDIS_RETENTION).toBe(36 * 3_600_000);
    expect(loadConfig({ REDIS_RETENTION: '90' }).REDIS_RETENTION).toBe(90_000);
    expect(loadConfig({ REDIS_RETENTION: '250ms' }).REDIS_RETENTION).toBe(250);
    expect(() => loadConfig({ REDIS_RETENTION: 'a week' })).toThrow(/REDIS_RETENTION/);
  });
});

describe('a coupon with closes_at and valid_until', () => {
  it('keeps every key until valid_until + retention, then answers from the ledger and is never armed again', { timeout: 60_000 }, async () => {
    const coupon = await createCoupon(client, 3, { closesInMs: 4_000, validForMs: 7_000 });
    const deadline = timestampDate(coupon.validUntil!).getTime() + RETENTION_MS;
    const alice = await client.issueCoupon({ couponId: coupon.id, userId: 'alice' });
    const carol = await client.issueCoupon({ couponId: coupon.id, userId: 'carol' });
    await issued(coupon.id, 'alice');
    await issued(coupon.id, 'carol');
    await client.redeemCoupon({ couponId: coupon.id, userId: 'alice', orderId: 'o1' });

    // Every key, including those the scripts created after arming, expires at the same moment.
    const before = await expiries(coupon.id);
    expect(Object.keys(before)).toEqual(expect.arrayContaining(['meta', 'winners', 'next', 'issued', 'redeem', 'redeem-loaded', 'claimed']));
    expect(Object.values(before).every((at) => at === deadline)).toBe(true);

    await sleepUntil(deadline + 100);
    expect(await expiries(coupon.id)).toEqual({});

    // Reads come from the ledger; past valid_until the coupon is EXPIRED.
    const view = (await client.getCoupon({ couponId: coupon.id })).coupon!;
    expect({ status: view.status, accepted: view.acceptedCount, issued: view.issuedCount }).toEqual({ status: CouponStatus.EXPIRED, accepted: 2n, issued: 2n });
    const aliceNow = (await client.getUserCoupon({ couponId: coupon.id, userId: 'alice' })).userCoupon!;
    expect({ state: aliceNow.state, orderId: aliceNow.orderId, seq: aliceNow.seq }).toEqual({ state: UserCouponState.REDEEMED, orderId: 'o1', seq: alice.seq });
    // IssueCoupon: a winner learns their seq, anyone else hears it is closed; the gate stays unarmed.
    expect(await client.issueCoupon({ couponId: coupon.id, userId: 'carol' })).toMatchObject({ seq: carol.seq, state: UserCouponState.ISSUED });
    const late = await callError(client.issueCoupon({ couponId: coupon.id, userId: 'bob' }));
    expect({ code: late.code, reason: late.reason }).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_CLOSED' });
    expect(await redis.client.exists(`coupon:{${coupon.id}}:meta`)).toBe(0);

    // RedeemCoupon past valid_until: expired, and the same order's repeat still succeeds.
    const expired = await callError(afterRebuild(() => client.redeemCoupon({ couponId: coupon.id, userId: 'carol', orderId: 'o2' })));
    expect({ code: expired.code, reason: expired.reason }).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_EXPIRED' });
    expect((await client.redeemCoupon({ couponId: coupon.id, userId: 'alice', orderId: 'o1' })).userCoupon!.orderId).toBe('o1');
    // The redemption state reloaded to answer them is kept for REDIS_RETENTION from then, all keys alike.
    const reloaded = await expiries(coupon.id);
    expect(reloaded).not.toHaveProperty('meta');
    const times = new Set(Object.values(reloaded));
    expect(times.size).toBe(1);
    const [at] = times;
    expect(at).toBeGreaterThan(Date.now());
    expect(at).toBeLessThanOrEqual(Date.now() + RETENTION_MS);
  });
});

describe('a coupon with valid_until and no closes_at', () => {
  it('gets its deadline when it completes, then answers SOLD_OUT from the ledger', { timeout: 60_000 }, async () => {
    const coupon = await createCoupon(client, 1, { validForMs: 6_000 });
    const deadline = timestampDate(coupon.validUntil!).getTime() + RETENTION_MS;
    expect(await redis.client.pttl(`coupon:{${coupon.id}}:meta`)).toBe(-1);
    expect((await client.issueCoupon({ couponId: coupon.id, userId: 'dan' })).seq).toBe(1n);
    await issued(coupon.id, 'dan');
    await until('COMPLETE', async () => (await client.getCoupon({ couponId: coupon.id })).coupon!.status === CouponStatus.COMPLETE);
    const before = await expiries(coupon.id);
    expect(Object.values(before).every((t) => t === deadline)).toBe(true);

    await sleepUntil(deadline + 100);
    expect(await expiries(coupon.id)).toEqual({});
    const soldOut = await callError(client.issueCoupon({ couponId: coupon.id, userId: 'eve' }));
    expect({ code: soldOut.code, reason: soldOut.reason }).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' });
    expect((await client.issueCoupon({ couponId: coupon.id, userId: 'dan' })).seq).toBe(1n);
    expect((await client.getCoupon({ couponId: coupon.id })).coupon!.status).toBe(CouponStatus.EXPIRED);
    expect(await redis.client.exists(`coupon:{${coupon.id}}:meta`)).toBe(0);
  });
});

describe('a coupon without valid_until', () => {
  it('can be redeemed forever, so its state never expires', async () => {
    const coupon = await createCoupon(client, 2, { closesInMs: 1_000 });
    await client.issueCoupon({ couponId: coupon.id, userId: 'fay' });
    await issued(coupon.id, 'fay');
    const all = await expiries(coupon.id);
    expect(Object.keys(all).length).toBeGreaterThan(3);
    expect(Object.values(all).every((t) => t === -1)).toBe(true);
  });
});
