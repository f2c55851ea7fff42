// Coupon-api and coupon-issuer on a Redis Cluster (REDIS_CLUSTER_NODES) of this
// file's own, 3 masters + 3 replicas. A sale over coupons on different shards, reads, redemption,
// the recovery index and reconcile across shards; then a master killed mid-sale: every user told OK
// keeps the seq they were told (I3) and the ledger holds exactly the users told OK; and a replica
// that cannot acknowledge (stopped) turns OK into UNAVAILABLE until it can (REDIS_WAIT_REPLICAS).
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CouponCallError } from '../../src/client/grpc.ts';
import { topicNames } from '../../src/events/topics.ts';
import { activeCouponsKey, couponKeys } from '../../src/store/keys.ts';
import { keySlot } from '../../src/store/redis.ts';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { run, startService, type ServiceProcess } from '../support/processes.ts';
import { afterRebuild, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedisCluster, type OwnRedisCluster } from '../support/redis-cluster.ts';
import { db as newDb, kafka, readTopic, uniqueEnv, until, waitForCaughtUp, dropEnvironment } from '../support/stack.ts';

const db = newDb();
const k = kafka();
let cluster: OwnRedisCluster;
let env: Record<string, string>;
let api: ServiceProcess;
let issuer: ServiceProcess;
let client: CouponClient;
const base = { ...uniqueEnv('redis-cluster'), API_WORKERS: '1', KAFKA_TOPIC_PARTITIONS: '2', ISSUE_BACKOFF_MS: '200', RECOVERY_INTERVAL_MS: '500' };
const topics = topicNames(base.KAFKA_TOPIC_PREFIX);

beforeAll(async () => {
  cluster = await startOwnRedisCluster();
  env = { ...base, REDIS_CLUSTER_NODES: cluster.seeds, REDIS_URL: 'redis://127.0.0.1:1/0' };
  [api, issuer] = await Promise.all([startService('api', env), startService('issuer', env)]);
  client = couponClient(api.address);
});

afterAll(async () => {
  client?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  await cluster?.stop();
  await db.destroy();
  await dropEnvironment(k, topics);
});

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');

type Answer = { ok: true; seq: number } | { ok: false; reason: string };
async function issue(couponId: string, userId: string): Promise<Answer> {
  try {
    // A loaded machine (the whole suite in parallel with six redis-servers) can take longer than the
    // client's default 5 s; a caller that gave up would retry the same user anyway.
    const res = await client.issueCoupon({ couponId, userId }, { timeoutMs: 30_000 });
    return { ok: true, seq: Number(res.seq) };
  } catch (err) {
    if (!(err instanceof CouponCallError)) throw err;
    // No answer within the caller's deadline: the caller does not know, and retries the same user.
    return { ok: false, reason: err.reason || grpc.status[err.code] };
  }
}

/** What each user heard last: the report when a user is missing from those told OK. */
const lastAnswer = new Map<string, Answer & { atMs: number }>();
const retryable = new Set(['BACKEND_UNAVAILABLE', 'PUBLISH_FAILED', 'DEADLINE_EXCEEDED']);

/** Retries "not decided" answers (a failover under way, no answer in time) until a decision; records every OK heard. */
async function issueUntilDecided(told: Map<string, number>, couponId: string, userId: string): Promise<Answer> {
  // Long enough for a loaded machine's replicas to acknowledge (UNAVAILABLE until then).
  const deadline = Date.now() + 100_000;
  for (;;) {
    const a = await issue(couponId, userId);
    lastAnswer.set(`${couponId}/${userId}`, { ...a, atMs: Date.now() });
    if (a.ok) {
      const before = told.get(userId);
      if (before !== undefined) expect(a.seq, `${userId} told two seqs`).toBe(before);
      told.set(userId, a.seq);
    }
    if (a.ok || !retryable.has(a.reason) || Date.now() > deadline) return a;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function expectLedgerIsTheOks(couponId: string, total: number, told: Map<string, number>): Promise<void> {
  await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP!, topics.issue);
  await until('a row for every user told OK', async () => (await ledger(couponId)).length >= told.size, 30_000).catch(() => undefined);
  const rows = await ledger(couponId);
  const deadLettered = await readTopic(k, topics.issueDlt, (key) => key === couponId);
  const held = new Map(rows.map((r) => [r.user_id, r.seq]));
  const missing = [...told].filter(([u, seq]) => held.get(u) !== seq);
  expect({ missing, extra: rows.filter((r) => !told.has(r.user_id)), deadLetters: deadLettered.map((m) => m.headers['x-error-reason']) }).toEqual({ missing: [], extra: [], deadLetters: [] });
  expect(rows.length).toBeLessThanOrEqual(total);
  expect(new Set(rows.map((r) => r.seq)).size).toBe(rows.length);
  expect(held).toEqual(told);
}

describe('coupon services on a Redis Cluster', () => {
  it('a sale over coupons on different shards grants exactly each quantity; reads, redemption, recovery index and reconcile work', { timeout: 180_000 }, async () => {
    // A cluster just formed may still answer UNAVAILABLE ("nothing created, retry") for a moment under load.
    const coupons = await Promise.all(Array.from({ length: 6 }, () => afterRebuild(() => createCoupon(client, 5, { validForMs: 3_600_000 }))));
    const masters = new Set(await Promise.all(coupons.map(async (c) => (await cluster.masterOf(couponKeys(c.id).meta)).port)));
    expect(masters.size, 'coupons spread over shards').toBeGreaterThan(1);
    // The client computes the same slot as the cluster.
    for (const c of coupons) expect(keySlot(couponKeys(c.id).meta)).toBe(await cluster.nodes[0]!.client.cluster('KEYSLOT', couponKeys(c.id).meta));

    const told = coupons.map(() => new Map<string, number>());
    await Promise.all(coupons.flatMap((c, i) => Array.from({ length: 9 }, (_, u) => issueUntilDecided(told[i]!, c.id, `user-${u}`))));
    for (const [i, c] of coupons.entries()) {
      const notTold = Array.from({ length: 9 }, (_, u) => `user-${u}`).filter((u) => !told[i]!.has(u)).map((u) => ({ u, ...lastAnswer.get(`${c.id}/${u}`) }));
      expect({ told: told[i]!.size, notToldButNotSoldOut: notTold.filter((a) => 'reason' in a && a.reason !== 'COUPON_SOLD_OUT') }).toEqual({ told: 5, notToldButNotSoldOut: [] });
      expect([...told[i]!.values()].sort()).toEqual([1, 2, 3, 4, 5]);
      await expectLedgerIsTheOks(c.id, 5, told[i]!);
    }

    const [first] = coupons;
    const winner = [...told[0]!.keys()][0]!;
    await until('ISSUED', async () => (await client.getUserCoupon({ couponId: first!.id, userId: winner })).userCoupon!.state === UserCouponState.ISSUED, 20_000);
    // UNAVAILABLE means "retry" (a shard slow to answer or acknowledge on a loaded machine): retried, as a caller would.
    const redeemed = await afterRebuild(() => client.redeemCoupon({ couponId: first!.id, userId: winner, orderId: 'order-1' }));
    expect(redeemed.userCoupon!.state).toBe(UserCouponState.REDEEMED);
    expect((await afterRebuild(() => client.getUserCoupon({ couponId: first!.id, userId: winner }))).userCoupon!.orderId).toBe('order-1');
    await afterRebuild(() => client.cancelRedemption({ couponId: first!.id, userId: winner, orderId: 'order-1' }));
    expect((await afterRebuild(() => client.getUserCoupon({ couponId: first!.id, userId: winner }))).userCoupon!.state).toBe(UserCouponState.ISSUED);

    // The recovery index (one key, on one shard) lists every coupon that reserved.
    const indexKey = activeCouponsKey(env.KAFKA_TOPIC_PREFIX!);
    const indexNode = await cluster.masterOf(indexKey);
    for (const c of coupons) expect(await indexNode.client.zscore(indexKey, c.id)).not.toBeNull();
    // Reconcile walks coupons on every shard: no drift.
    await until('redemption in the ledger', async () => Number((await db('user_coupons').where({ coupon_id: first!.id, user_id: winner }).first<{ redemption_version: string | number }>())?.redemption_version) === 2, 20_000);
    const reconcile = await run(process.execPath, ['src/bin/reconcile.ts', ...coupons.map((c) => c.id)], env);
    expect(reconcile.stdout + reconcile.stderr).toContain('6 coupons, 0 with drift');
    expect(reconcile.code).toBe(0);
  });

  it('a replica that cannot acknowledge turns OK into UNAVAILABLE; once it can, the retry answers OK with the same seq', { timeout: 40_000 }, async () => {
    const coupon = await createCoupon(client, 3);
    const master = await cluster.masterOf(couponKeys(coupon.id).meta);
    const [replica] = await cluster.replicasOf(master.port);
    replica!.child.kill('SIGSTOP');
    let paused: Answer;
    try {
      paused = await issue(coupon.id, 'slow-replica');
    } finally {
      replica!.child.kill('SIGCONT');
    }
    expect(paused).toEqual({ ok: false, reason: 'BACKEND_UNAVAILABLE' });
    const told = new Map<string, number>();
    expect(await issueUntilDecided(told, coupon.id, 'slow-replica')).toEqual({ ok: true, seq: 1 });
    await expectLedgerIsTheOks(coupon.id, 3, told);
  });

  it('the issuer waits out a replica that cannot acknowledge (an outage, never a dead letter), then issues every user told OK', { timeout: 60_000 }, async () => {
    const coupon = await createCoupon(client, 10);
    await issuer.stop();
    const told = new Map<string, number>();
    for (let u = 0; u < 6; u++) await issueUntilDecided(told, coupon.id, `patient-${u}`);
    expect(told.size).toBe(6);
    const master = await cluster.masterOf(couponKeys(coupon.id).meta);
    const [replica] = await cluster.replicasOf(master.port);
    // The issuer claims the records, but its WAIT cannot be acknowledged: the replica stays stopped
    // until the outage alert, i.e. for 5 failed attempts (ISSUE_MAX_ATTEMPTS: a poison batch would
    // be dead-lettered by then), and 2 s more.
    replica!.child.kill('SIGSTOP');
    try {
      issuer = await startService('issuer', env);
      await issuer.waitForLog('coupon.dependency.outage', 30_000);
      await new Promise((r) => setTimeout(r, 2_000));
    } finally {
      replica!.child.kill('SIGCONT');
    }
    await expectLedgerIsTheOks(coupon.id, 10, told);
    // Told as an outage: the alert once, then the recovery.
    expect(issuer.logs.filter((l) => l.msg === 'coupon.dependency.outage').map((l) => l.error)).toEqual([expect.stringContaining('Redis replicas acknowledged')]);
    await issuer.waitForLog('coupon.dependency.recovered', 10_000);
  });

  it('a master killed mid-sale: every user told OK keeps their seq, and the ledger holds exactly them', { timeout: 180_000 }, async () => {
    const total = 150;
    const started = Date.now();
    const coupon = await createCoupon(client, total);
    const master = await cluster.masterOf(couponKeys(coupon.id).meta);
    const told = new Map<string, number>();
    const users = Array.from({ length: 200 }, (_, i) => `buyer-${i}`);
    let next = 0;
    let killed: Promise<unknown> | undefined;
    const worker = async () => {
      while (next < users.length) {
        const userId = users[next++]!;
        await issueUntilDecided(told, coupon.id, userId);
        // The killed master comes back (as a supervisor would restart it) and rejoins as the new
        // master's replica: until then its shard has no replica to acknowledge, and answers UNAVAILABLE.
        if (!killed && told.size >= 40) killed = cluster.killMaster(master.port).then(async (promoted) => { await cluster.restart(master.port); return promoted; });
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    const promoted = await killed;
    expect(promoted).toBeDefined();
    const notTold = users.filter((u) => !told.has(u)).map((u) => ({ u, ...lastAnswer.get(`${coupon.id}/${u}`), atMs: (lastAnswer.get(`${coupon.id}/${u}`)?.atMs ?? started) - started }));
    expect({ told: told.size, notToldButNotSoldOut: notTold.filter((a) => 'reason' in a && a.reason !== 'COUPON_SOLD_OUT') }).toEqual({ told: total, notToldButNotSoldOut: [] });
    await expectLedgerIsTheOks(coupon.id, total, told);
  });
});
