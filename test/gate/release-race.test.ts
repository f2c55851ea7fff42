// A late release must free only its own unconfirmed reservation (review finding): if the user's
// pending entry is gone while they still hold the seq, someone else made the record durable (the
// recovery loop republished and confirmed it, or a rebuild took it from the ledger), and freeing
// the seq would hand it to a second user whose record then loses on (coupon_id, seq).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateConfirm, gateConfirmMany, gateRelease, gateReserve } from '../../src/gate/gate-scripts.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { uniqueEnv } from '../support/stack.ts';

let redis: OwnRedis;
let api: ServiceProcess;
let client: CouponClient;
beforeAll(async () => {
  redis = await startOwnRedis();
  api = await startService('api', { ...uniqueEnv('release-race'), REDIS_URL: redis.url });
  client = couponClient(api.address);
});
afterAll(async () => { client?.close(); await api?.stop(); await redis?.stop(); });

describe('a publish that gives up after its reservation was made durable by someone else', () => {
  it('is not released: the answer is OK (the coupon is coming) and the seq is never handed out again', async () => {
    const coupon = await createCoupon(client, 5);
    const r = redis.client();
    const scripts = new CouponScripts(r);
    const k = couponKeys(coupon.id);

    // coupon-api P1 reserves for A; its publish is slow.
    const reservedAt = Date.now();
    expect(await gateReserve(scripts, coupon.id, 'A', reservedAt)).toMatchObject({ status: 'RESERVED', seq: 1 });
    // Another coupon-api's recovery loop finds the entry stale, republishes it and confirms it.
    await gateConfirm(scripts, coupon.id, 'A', 1, reservedAt);
    expect(await r.zscore(k.pending, 'A')).toBeNull();
    // P1's own publish finally gives up and it tries to release.
    expect(await gateRelease(scripts, coupon.id, 'A', 1, reservedAt)).toBe('CLAIMED');
    expect(await r.hget(k.winners, 'A')).toBe('1');
    expect(await r.llen(k.free)).toBe(0);
    // The next user gets seq 2, not A's seq 1.
    expect((await client.issueCoupon({ couponId: coupon.id, userId: 'B' })).seq).toBe(2n);
  });

  it('a release naming another reservation of the same user releases nothing', async () => {
    const coupon = await createCoupon(client, 5);
    const r = redis.client();
    const scripts = new CouponScripts(r);
    const reservedAt = Date.now();
    expect(await gateReserve(scripts, coupon.id, 'A', reservedAt)).toMatchObject({ status: 'RESERVED', seq: 1 });
    expect(await gateRelease(scripts, coupon.id, 'A', 1, reservedAt - 5_000)).toBe('STALE');
    expect(await r.hget(couponKeys(coupon.id).winners, 'A')).toBe('1');
    // Its own release does release.
    expect(await gateRelease(scripts, coupon.id, 'A', 1, reservedAt)).toBe('RELEASED');
    expect(await r.hget(couponKeys(coupon.id).winners, 'A')).toBeNull();
  });
});

describe('confirms of several reservations in one script call (a publisher batch acknowledged at once)', () => {
  it('drop exactly the entries of the reservations they name, each judged on its own', async () => {
    const coupon = await createCoupon(client, 5);
    const r = redis.client();
    const scripts = new CouponScripts(r);
    const k = couponKeys(coupon.id);
    const at = Date.now();
    for (const [user, seq] of [['A', 1], ['B', 2], ['C', 3], ['D', 4]] as const) {
      expect(await gateReserve(scripts, coupon.id, user, at)).toMatchObject({ status: 'RESERVED', seq });
    }
    // A: its own reservation; B: another reservation time; C: another seq; E: never reserved; D: not named.
    expect(await gateConfirmMany(scripts, coupon.id, [
      { userId: 'A', reservedAtMs: at, seq: 1 }, { userId: 'B', reservedAtMs: at - 1, seq: 2 },
      { userId: 'C', reservedAtMs: at, seq: 2 }, { userId: 'E', reservedAtMs: at, seq: 5 },
    ])).toEqual([true, false, false, false]);
    expect((await r.zrange(k.pending, '0', '-1')).sort()).toEqual(['B', 'C', 'D']);
    // The same reservation named twice in one call: removed once.
    expect(await gateConfirmMany(scripts, coupon.id, [{ userId: 'D', reservedAtMs: at, seq: 4 }, { userId: 'D', reservedAtMs: at, seq: 4 }])).toEqual([true, false]);
    expect(await r.hgetall(k.winners)).toEqual({ A: '1', B: '2', C: '3', D: '4' });
  });
});
