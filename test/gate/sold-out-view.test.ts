// Sold out, answered in process: once a coupon's sell-out is final, coupon-api refuses users who
// are certainly not winners without Redis, a winner still hears their seq from Redis, and a rebuild
// of the gate (Redis lost it) drops the view. Real coupon-api and coupon-issuer on a redis-server of
// this file's own (it is flushed and stopped here), a @grpc/grpc-js client, and Redis's MONITOR
// stream as the witness of which calls reached Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import type { Redis } from 'ioredis';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';
import { scrape, sumOf } from '../../src/metrics/text-format.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { afterRebuild, callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { uniqueEnv, until } from '../support/stack.ts';

// One worker, so that one process holds the view the test watches. The lifetime is long, so the
// view still answers while this file's Redis is stopped; the recheck is the default.
const env = { ...uniqueEnv('sold-out-view'), API_WORKERS: '1', GATE_LOCAL_LIFETIME_MS: '600000', PUBLISH_TIMEOUT_MS: '2000', RECOVERY_STALE_MS: '5000' };
let redisServer: OwnRedis;
let r: Redis;
let api: ServiceProcess;
let issuer: ServiceProcess;
let client: CouponClient;

beforeAll(async () => {
  redisServer = await startOwnRedis();
  r = redisServer.client();
  [api, issuer] = await Promise.all([
    startService('api', { ...env, REDIS_URL: redisServer.url }),
    startService('issuer', { ...env, REDIS_URL: redisServer.url }),
  ]);
  client = couponClient(api.address);
});
afterAll(async () => {
  client?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  r?.disconnect();
  await redisServer?.stop();
});

const localAnswers = async () => sumOf(await scrape(api.metricsUrl, 15_000), 'coupon_gate_local_answers_total', {});

/** A coupon of `winners.length` units, sold out to them, each ISSUED, and the view built. */
async function soldOutCoupon(winners: string[]): Promise<string> {
  const coupon = await createCoupon(client, winners.length);
  for (const [i, userId] of winners.entries()) expect((await client.issueCoupon({ couponId: coupon.id, userId })).seq).toBe(BigInt(i + 1));
  await until('every winner ISSUED', async () => {
    const states = await Promise.all(winners.map((userId) => client.getUserCoupon({ couponId: coupon.id, userId })));
    return states.every((s) => s.userCoupon!.state === UserCouponState.ISSUED);
  });
  // The first refusal comes from Redis and builds the view; later ones are answered in process.
  const before = await localAnswers();
  await until('a refusal answered in process', async () => {
    const err = await callError(client.issueCoupon({ couponId: coupon.id, userId: `probe-${Date.now()}` }));
    expect(err.reason).toBe('COUPON_SOLD_OUT');
    return (await localAnswers()) > before;
  }, 30_000, 50);
  return coupon.id;
}

/** Commands clients send Redis for the coupon's keys while `fn` runs (MONITOR), each as its arguments. */
async function commandsFor<T>(couponId: string, fn: () => Promise<T>): Promise<{ result: T; commands: string[][] }> {
  const monitor = await r.monitor();
  const commands: string[][] = [];
  // Commands a script runs come through MONITOR too, with source "lua": only the calls count.
  monitor.on('monitor', (_time: string, args: string[], source: string) => { if (source !== 'lua' && args.some((a) => a.includes(`{${couponId}}`))) commands.push(args); });
  try {
    const result = await fn();
    await new Promise((resolve) => setTimeout(resolve, 200));
    return { result, commands };
  } finally {
    monitor.disconnect();
  }
}

describe('a sold-out coupon', () => {
  it('refuses 200 users who are no winners without a reserve script in Redis, and still tells a winner their seq', async () => {
    const winners = ['w1', 'w2', 'w3'];
    const couponId = await soldOutCoupon(winners);
    const before = await localAnswers();
    const { result: answers, commands } = await commandsFor(couponId, async () => {
      const refusals = [];
      for (let i = 0; i < 200; i++) refusals.push(await callError(client.issueCoupon({ couponId, userId: `late-${i}` })).then((e) => e.reason));
      const repeat = await client.issueCoupon({ couponId, userId: 'w2' });
      return { refusals, repeat };
    });
    expect(new Set(answers.refusals)).toEqual(new Set(['COUPON_SOLD_OUT']));
    expect(answers.repeat).toMatchObject({ seq: 2n, state: UserCouponState.ISSUED });
    // The winner's repeat is the one reserve script (7 keys) Redis saw; the rest are the view's
    // epoch checks (gate-sold-out.lua, 3 keys), at most one per GATE_LOCAL_RECHECK_MS.
    const reserves = commands.filter((c) => c[0]?.toLowerCase().startsWith('eval') && c[2] === '7');
    const checks = commands.filter((c) => c[0]?.toLowerCase().startsWith('eval') && c[2] === '3');
    expect(reserves.map((c) => c.at(-3))).toEqual(['w2']);
    // Anything else is the recovery loops' look at the pending journal and the outbox (gate/recovery.ts), on their own timer.
    const others = commands.filter((c) => !reserves.includes(c) && !checks.includes(c)).map((c) => c[0]!.toLowerCase());
    expect(others.filter((name) => !['zrangebyscore', 'zrangebylex', 'zcard'].includes(name))).toEqual([]);
    expect(checks.length).toBeLessThan(200 * 0.01 + 50);
    // 200 refusals, minus at most a Bloom filter false positive or two that went to Redis.
    expect((await localAnswers()) - before).toBeGreaterThanOrEqual(198);
  });

  it('drops its view when Redis loses the gate, and answers from the rebuilt gate', async () => {
    const couponId = await soldOutCoupon(['x1', 'x2']);
    await r.flushall();
    // Within GATE_LOCAL_RECHECK_MS (plus a round trip) the view notices the gate is gone: calls go to
    // Redis again, which rebuilds the gate from the ledger (UNAVAILABLE while it settles).
    const err = await until('a refusal that is not answered in process', async () => {
      const e = await callError(client.issueCoupon({ couponId, userId: 'after-flush' }));
      return e.reason === 'BACKEND_UNAVAILABLE' ? e : undefined;
    }, 10_000, 20);
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    const repeat = await afterRebuild(() => client.issueCoupon({ couponId, userId: 'x2' }));
    expect(repeat.seq).toBe(2n);
    const refusal = await callError(client.issueCoupon({ couponId, userId: 'after-rebuild' }));
    expect(refusal.reason).toBe('COUPON_SOLD_OUT');
    expect(await r.hgetall(`coupon:{${couponId}}:winners`)).toEqual({ x1: '1', x2: '2' });
  });

  it('notices a restock within GATE_LOCAL_RECHECK_MS of it, however few calls come: the next user wins the new unit', async () => {
    // Found by the model test (test/model/): a call that found the view's last check older than
    // GATE_LOCAL_RECHECK_MS started a new check but answered from the old sell-out meanwhile, so the
    // first user after a quiet spell heard COUPON_SOLD_OUT for a coupon restocked long before.
    const couponId = await soldOutCoupon(['q1', 'q2']);
    // No call between the view's last check and the restock, nor for a while after it.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await client.updateCoupon({ coupon: { id: couponId, totalQuantity: 3n }, updateMask: { paths: ['total_quantity'] } })).coupon!.remaining).toBe(1n);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await client.issueCoupon({ couponId, userId: 'after-restock' })).toMatchObject({ seq: 3n, state: UserCouponState.PENDING });
    expect(await r.hgetall(`coupon:{${couponId}}:winners`)).toEqual({ q1: '1', q2: '2', 'after-restock': '3' });
    const refusal = await callError(client.issueCoupon({ couponId, userId: 'one-too-many' }));
    expect(refusal.reason).toBe('COUPON_SOLD_OUT');
  });

  it('with Redis stopped, within the view\'s lifetime: a non-winner hears COUPON_SOLD_OUT, a winner never does', async () => {
    const couponId = await soldOutCoupon(['s1', 's2']);
    await redisServer.stop();
    try {
      await refusalsWithoutRedis(couponId);
    } finally {
      await redisServer.restart();
    }
  });
});

async function refusalsWithoutRedis(couponId: string): Promise<void> {
    for (let i = 0; i < 20; i++) {
      const err = await callError(client.issueCoupon({ couponId, userId: `nobody-${i}` }, { timeoutMs: 5_000 }));
      expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' });
    }
    for (const userId of ['s1', 's2']) {
      const answer = await client.issueCoupon({ couponId, userId }, { timeoutMs: 5_000 }).then((res) => ({ seq: res.seq }), (e: unknown) => {
        if (!(e instanceof CouponCallError)) throw e;
        return { code: e.code, reason: e.reason };
      });
      expect([{ seq: userId === 's1' ? 1n : 2n }, { code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' }]).toContainEqual(answer);
    }
}
