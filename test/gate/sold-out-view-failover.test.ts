// The in-process sold-out view checks only "final" and the epoch when it rechecks. A Redis
// failover that drops the master's last writes (docs/design.md#redis-loses-everything) takes a
// winner back without a new epoch; if another process sells that unit again before this process
// rechecks, the recheck finds the coupon final under the same epoch and revives the old Bloom filter,
// which does not hold the new winner. From then on this process tells that winner COUPON_SOLD_OUT.
//
// Real coupon-api x2 (A holds the view, B is where the new winner wins) and coupon-issuer on a
// redis-server of this file's own. The failover's lost suffix is applied by hand: w2's reservation
// (HSET winners, INCR next) is written and then dropped again, which is what a replica promoted
// before it received those writes holds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';
import { scrape, sumOf } from '../../src/metrics/text-format.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { uniqueEnv, until } from '../support/stack.ts';

// Default GATE_LOCAL_RECHECK_MS (100) and GATE_LOCAL_LIFETIME_MS (1000): nothing stretched.
const env = { ...uniqueEnv('sold-out-revival'), API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000' };
let redisServer: OwnRedis;
let r: Redis;
let apiA: ServiceProcess;
let apiB: ServiceProcess;
let issuer: ServiceProcess;
let a: CouponClient;
let b: CouponClient;

beforeAll(async () => {
  redisServer = await startOwnRedis();
  r = redisServer.client();
  [apiA, apiB, issuer] = await Promise.all([
    startService('api', { ...env, REDIS_URL: redisServer.url }),
    startService('api', { ...env, REDIS_URL: redisServer.url }),
    startService('issuer', { ...env, REDIS_URL: redisServer.url }),
  ]);
  a = couponClient(apiA.address);
  b = couponClient(apiB.address);
});
afterAll(async () => {
  a?.close();
  b?.close();
  await Promise.all([apiA?.stop(), apiB?.stop(), issuer?.stop()]);
  r?.disconnect();
  await redisServer?.stop();
});

const localAnswers = async () => sumOf(await scrape(apiA.metricsUrl, 15_000), 'coupon_gate_local_answers_total', {});
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

describe('the sold-out view after a failover took a winner back', () => {
  it('a user who won the unit again is never told COUPON_SOLD_OUT by another process (decision 0006: a winner is never told it)', async () => {
    const coupon = await createCoupon(a, 2);
    const k = `coupon:{${coupon.id}}`;
    expect((await a.issueCoupon({ couponId: coupon.id, userId: 'w1' })).seq).toBe(1n);
    await until('w1 ISSUED', async () => (await a.getUserCoupon({ couponId: coupon.id, userId: 'w1' })).userCoupon!.state === UserCouponState.ISSUED);
    // w2's reservation and its confirm, acknowledged by the old master (its record never reached
    // the ledger: the issuer drops it as LOST once the failover below took the reservation back).
    await r.hset(`${k}:winners`, 'w2', '2');
    await r.set(`${k}:next`, '2');

    // A hears SOLD_OUT from Redis and builds its view: {w1, w2}, final, epoch E.
    const before = await localAnswers();
    await until('a refusal answered in process by A', async () => {
      expect((await callError(a.issueCoupon({ couponId: coupon.id, userId: `probe-${Date.now()}` }))).reason).toBe('COUPON_SOLD_OUT');
      return (await localAnswers()) > before;
    }, 30_000, 50);

    // A gets no call for longer than the view's lifetime. Meanwhile the failover drops w2's writes
    // (same meta, same epoch), and y wins the unit again through B.
    await sleep(1_500);
    await r.hdel(`${k}:winners`, 'w2');
    await r.set(`${k}:next`, '1');
    const won = await b.issueCoupon({ couponId: coupon.id, userId: 'y' });
    expect(won.seq).toBe(2n);
    expect(await r.hget(`${k}:winners`, 'y')).toBe('2');
    expect(await r.zcard(`${k}:pending`)).toBe(0);

    // The next call to A is past the lifetime: it goes to Redis (SOLD_OUT, right) and starts a
    // recheck, which finds the coupon final under epoch E and keeps the old filter.
    expect((await callError(a.issueCoupon({ couponId: coupon.id, userId: 'someone-else' }))).reason).toBe('COUPON_SOLD_OUT');
    await sleep(300);

    // y is a winner: every process must answer OK with seq 2.
    const answers: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      answers.push(await a.issueCoupon({ couponId: coupon.id, userId: 'y' }).then((res) => ({ seq: res.seq }), (e: unknown) => {
        if (!(e instanceof CouponCallError)) throw e;
        return { reason: e.reason };
      }));
      await sleep(250);
    }
    expect(answers).toEqual([{ seq: 2n }, { seq: 2n }, { seq: 2n }]);
  });
});
