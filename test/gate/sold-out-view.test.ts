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
import { db as newDb, uniqueEnv, until } from '../support/stack.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateRelease } from '../../src/gate/gate-scripts.ts';

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
const db = newDb();
afterAll(async () => {
  await db.destroy();
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
    const t0 = Date.now();
    const { result: answers, commands } = await commandsFor(couponId, async () => {
      const refusals = [];
      for (let i = 0; i < 200; i++) refusals.push(await callError(client.issueCoupon({ couponId, userId: `late-${i}` })).then((e) => e.reason));
      const repeat = await client.issueCoupon({ couponId, userId: 'w2' });
      return { refusals, repeat };
    });
    expect(new Set(answers.refusals)).toEqual(new Set(['COUPON_SOLD_OUT']));
    expect(answers.repeat).toMatchObject({ seq: 2n, state: UserCouponState.ISSUED });
    // The winner's repeat is the one reserve script (7 keys) Redis saw; the rest are the view's
    // rechecks, one HMGET of the coupon's meta each (no script), at most one per GATE_LOCAL_RECHECK_MS.
    const reserves = commands.filter((c) => c[0]?.toLowerCase().startsWith('eval') && c[2] === '7');
    const checks = commands.filter((c) => c[0]?.toLowerCase() === 'hmget' && c[1] === `coupon:{${couponId}}:meta`);
    expect(reserves.map((c) => c.at(-3))).toEqual(['w2']);
    expect(commands.filter((c) => c[0]?.toLowerCase().startsWith('eval') && c[2] === '3'), 'no sold-out script once the view is built').toEqual([]);
    // Anything else is the recovery loops' look at the pending journal and the outbox (gate/recovery.ts), on their own timer:
    // gate-stale.lua on the pending journal and the winners (2 keys), ZCARD, ZRANGEBYLEX.
    const recovery = (c: string[]) => ['zrangebyscore', 'zrangebylex', 'zcard'].includes(c[0]!.toLowerCase())
      || (c[0]!.toLowerCase().startsWith('eval') && c[2] === '2' && c[3] === `coupon:{${couponId}}:pending`);
    const others = commands.filter((c) => !reserves.includes(c) && !checks.includes(c) && !recovery(c));
    expect(others).toEqual([]);
    // At most one recheck per GATE_LOCAL_RECHECK_MS (100 ms) of the window, however slow the machine.
    expect(checks.length).toBeLessThanOrEqual(Math.ceil((Date.now() - t0) / 100) + 2);
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

  it('after a restock, a view older than GATE_LOCAL_RECHECK_MS checks the epoch before it answers: the next new user wins', async () => {
    const couponId = await soldOutCoupon(['r1', 'r2']);
    // The view's last check is older than the recheck interval when the change lands.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await client.updateCoupon({ coupon: { id: couponId, totalQuantity: 3n }, updateMask: { paths: ['total_quantity'] } });
    const before = await localAnswers();
    expect((await client.issueCoupon({ couponId, userId: 'r3' })).seq).toBe(3n);
    expect(await localAnswers()).toBe(before);
    expect((await callError(client.issueCoupon({ couponId, userId: 'r4' }))).reason).toBe('COUPON_SOLD_OUT');
  });

  it('a slot released after the view was built (a failover lost a confirm, then the publish failed): within GATE_LOCAL_RECHECK_MS the next new user wins it', async () => {
    const couponId = await soldOutCoupon(['f1', 'f2']);
    // What a failover that lost f2's last writes leaves (its confirm and the issuer's claim), and a
    // publish that then never landed: f2 back in the pending journal, and no row in the ledger.
    const keys = couponKeys(couponId);
    // A recent reservation time, so the recovery loop (RECOVERY_STALE_MS) leaves it to this release.
    const reservedAt = Date.now();
    await r.hdel(keys.claimed, 'f2');
    await r.zadd(keys.pending, reservedAt, 'f2');
    await db.transaction(async (tx) => {
      await tx('user_coupons').where({ coupon_id: couponId, user_id: 'f2' }).delete();
      await tx('coupons').where({ id: couponId }).update({ issued_count: 1, completed_at: null });
    });
    expect(await gateRelease(new CouponScripts(r), couponId, 'f2', 2, reservedAt)).toBe('RELEASED');
    // The view's next recheck sees the release (one HMGET): the slot goes to the next new user.
    const won = await until('the released slot won', async () => {
      try { return await client.issueCoupon({ couponId, userId: 'f3' }); } catch (err) {
        if (err instanceof CouponCallError && err.reason === 'COUPON_SOLD_OUT') return undefined;
        throw err;
      }
    }, 5_000, 20);
    expect(won.seq).toBe(2n);
    expect((await callError(client.issueCoupon({ couponId, userId: 'f4' }))).reason).toBe('COUPON_SOLD_OUT');
    expect(await r.hgetall(keys.winners)).toEqual({ f1: '1', f3: '2' });
    await until('f3 in the ledger', async () => (await db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select('user_id', 'seq')).length === 2 || undefined, 30_000);
    expect(await db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select('user_id', 'seq')).toEqual([{ user_id: 'f1', seq: 1 }, { user_id: 'f3', seq: 2 }]);
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
