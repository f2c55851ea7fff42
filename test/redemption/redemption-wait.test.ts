// RedeemCoupon and CancelRedemption answer OK only after WAIT (REDIS_WAIT_REPLICAS), like IssueCoupon
// (test/gate/repeat-wait.test.ts). Two gaps closed here:
// - a repeat (UNCHANGED) answered by another process than the one that made the change: WAIT covers
//   the answering connection's own writes, so the repeat's script writes too, and its WAIT then
//   covers the change it reports. On this machine's Redis 7.0 a connection's WAIT offset advances
//   with any command, so the WAIT part holds without that write; what Redis documents, and what
//   newer versions do, is that only the connection's writes count. The test checks the write
//   itself: the repeat moves the master's replication offset.
// - ORDER_MISMATCH remembers the order as cancelled ("this order can no longer redeem it"): that
//   write must reach a replica before the caller hears it, or a failover could let the order redeem.
// A master and a replica of this file's own; the replica is kept busy (DEBUG SLEEP) or detached
// (REPLICAOF NO ONE) so it acknowledges nothing.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import type { Redis } from 'ioredis';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { topicNames } from '../../src/events/topics.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { cancelRedemption, redeem } from '../../src/redemption/redemption-scripts.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { db as newDb, kafka, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';

let master: OwnRedis;
let replica: OwnRedis;
const clients: Redis[] = [];
const client = (r: OwnRedis) => { const c = r.client(); clients.push(c); return c; };
const inSync = async () => /master_link_status:up/.test(await client(replica).info('replication'));
const replOffset = async (r: Redis) => Number(/master_repl_offset:(\d+)/.exec(await r.info('replication'))![1]);

beforeAll(async () => {
  // The full sync writes an RDB file: into a folder of the test's own, not the working directory.
  const dir = mkdtempSync(join(tmpdir(), 'redemption-wait-'));
  master = await startOwnRedis(['--dir', dir]);
  replica = await startOwnRedis(['--dir', dir, '--dbfilename', 'replica.rdb', '--enable-debug-command', 'yes']);
  await client(replica).call('REPLICAOF', '127.0.0.1', String(master.port));
  await until('the replica in sync', inSync, 20_000);
}, 60_000);
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await Promise.all([replica?.stop(), master?.stop()]);
});

describe('a redemption repeat answered by another process than the one that made the change', () => {
  /** An issued coupon of one user, its redemption state loaded, as the gate and the issuer leave it. */
  async function issued(r: Redis, couponId: string) {
    const k = couponKeys(couponId);
    await r.hset(k.meta, 'total', '1', 'opens_ms', '0', 'closes_ms', '0', 'expire_at_ms', '0', 'valid_until_ms', '0');
    await r.hset(k.winners, 'u1', '1');
    await r.hset(k.issued, 'u1', String(Date.now()));
    await r.set(k.redeemLoaded, '1');
  }

  /**
   * `change` runs on one connection while the replica sleeps, then `repeat` on another: the repeat
   * must write (the master's offset moves), its WAIT must not confirm while the replica holds
   * nothing new, and must once the replica caught up, which then holds `expectOnReplica`.
   */
  async function repeatWaitsForTheChange(couponId: string, change: (s: CouponScripts) => Promise<unknown>, repeat: (s: CouponScripts) => Promise<{ status: string }>, onReplica: () => Promise<unknown>, expected: unknown) {
    const changing = client(master);
    const repeating = client(master);
    await issued(changing, couponId);
    // The repeating process has written before: WAIT on its connection would pass at once for those.
    await repeating.set(`{${couponId}}:older-write`, '1');
    expect(await repeating.call('WAIT', '1', '2000')).toBe(1);

    const sleeping = client(replica).call('DEBUG', 'SLEEP', '1.5');
    await new Promise((r) => setTimeout(r, 100));
    await change(new CouponScripts(changing));
    const before = await replOffset(repeating);
    expect(await repeat(new CouponScripts(repeating))).toMatchObject({ status: 'UNCHANGED' });
    // The repeat wrote: its connection's WAIT now covers everything before it, the change included.
    expect(await replOffset(repeating)).toBeGreaterThan(before);
    expect(await repeating.call('WAIT', '1', '300')).toBe(0);
    await sleeping;
    expect(await repeating.call('WAIT', '1', '2000')).toBe(1);
    expect(await onReplica()).toEqual(expected);
  }

  it("a repeated RedeemCoupon waits for the replica to hold the other process's redemption", async () => {
    const couponId = '0b7b1c54-9f3e-4d55-8f43-5f1f6bd1b001';
    await repeatWaitsForTheChange(couponId,
      async (s) => expect(await redeem(s, couponId, 'u1', 'order-1', Date.now())).toMatchObject({ status: 'REDEEMED' }),
      (s) => redeem(s, couponId, 'u1', 'order-1', Date.now()),
      async () => (await client(replica).hget(couponKeys(couponId).redeem, 'u1'))?.split('|').slice(0, 3),
      ['R', 'order-1', '1']);
  });

  it("a repeated CancelRedemption waits for the replica to hold the other process's cancellation", async () => {
    const couponId = '0b7b1c54-9f3e-4d55-8f43-5f1f6bd1b002';
    await repeatWaitsForTheChange(couponId,
      async (s) => {
        expect(await redeem(s, couponId, 'u1', 'order-1', Date.now())).toMatchObject({ status: 'REDEEMED' });
        expect(await cancelRedemption(s, couponId, 'u1', 'order-1', Date.now(), false)).toMatchObject({ status: 'CANCELLED' });
      },
      (s) => cancelRedemption(s, couponId, 'u1', 'order-1', Date.now(), false),
      () => client(replica).sismember(couponKeys(couponId).cancelled, 'u1|order-1'),
      1);
  });
});

describe('CancelRedemption for an order that does not hold the coupon (ORDER_MISMATCH), with REDIS_WAIT_REPLICAS=1', () => {
  let api: ServiceProcess;
  let issuer: ServiceProcess;
  let coupons: CouponClient;
  // A WAIT timeout long enough for a replica just back in sync on a loaded machine, below REDIS_COMMAND_TIMEOUT_MS.
  const env = { ...uniqueEnv('redemption-wait'), REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: '1000' };
  const db = newDb();
  beforeAll(async () => {
    [api, issuer] = await Promise.all([startService('api', { ...env, REDIS_URL: master.url }), startService('issuer', { ...env, REDIS_URL: master.url })]);
    coupons = couponClient(api.address);
  }, 60_000);
  afterAll(async () => {
    coupons?.close();
    await Promise.all([api?.stop(), issuer?.stop()]);
    await db.destroy();
  });

  it('is not answered while no replica holds the cancelled order; once one does, the retry answers from what it holds', { timeout: 90_000 }, async () => {
    const coupon = await createCoupon(coupons, 1);
    await coupons.issueCoupon({ couponId: coupon.id, userId: 'buyer' });
    await until('ISSUED', async () => (await coupons.getUserCoupon({ couponId: coupon.id, userId: 'buyer' })).userCoupon!.state === UserCouponState.ISSUED, 30_000);
    await coupons.redeemCoupon({ couponId: coupon.id, userId: 'buyer', orderId: 'order-a' });

    // The replica is cut off: no write from now on reaches it.
    await client(replica).call('REPLICAOF', 'NO', 'ONE');
    await until('the master without a replica', async () => /connected_slaves:0/.test(await client(master).info('replication')), 10_000);
    try {
      const err = await callError(coupons.cancelRedemption({ couponId: coupon.id, userId: 'buyer', orderId: 'order-b' }));
      // Told ORDER_MISMATCH, the payment service would believe order-b can never redeem; a failover
      // to this replica would forget that.
      expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      expect(await client(replica).sismember(couponKeys(coupon.id).cancelled, 'buyer|order-b')).toBe(0);
    } finally {
      await client(replica).call('REPLICAOF', '127.0.0.1', String(master.port));
      await until('the replica in sync again', inSync, 20_000);
    }

    // The retry finds the order remembered as cancelled (a repeat): OK, and the coupon is untouched.
    const retried = await coupons.cancelRedemption({ couponId: coupon.id, userId: 'buyer', orderId: 'order-b' });
    expect(retried.userCoupon).toMatchObject({ state: UserCouponState.REDEEMED, orderId: 'order-a' });
    expect(await client(replica).sismember(couponKeys(coupon.id).cancelled, 'buyer|order-b')).toBe(1);
    expect(await callError(coupons.redeemCoupon({ couponId: coupon.id, userId: 'buyer', orderId: 'order-b' }))).toMatchObject({ reason: 'REDEMPTION_CANCELLED' });
    const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
    await waitForCaughtUp(kafka(), redemptionGroups(env.KAFKA_REDEMPTION_GROUP).ledger, topics.redemption);
    expect(await db('redemption_cancellations').where({ coupon_id: coupon.id }).select('user_id', 'order_id')).toEqual([{ user_id: 'buyer', order_id: 'order-b' }]);
    expect(await db('user_coupons').where({ coupon_id: coupon.id }).first('order_id')).toEqual({ order_id: 'order-a' });
  });
});
