// REDIS_WAIT_REPLICAS after a failover (README, "Redis Cluster"). A master is paused with a
// reservation in its socket; a replica takes over; the old master wakes and runs the reservation
// before it learns it was demoted, and its answer is slow to reach the client, which meanwhile has
// learnt the new master. The WAIT must go to the node that ran the script: a WAIT sent to the new
// master counts that master's replicas, not the write, and would confirm a reservation that dies
// with the old master (it resyncs from the new one). The caller must never hear OK for a write the
// surviving cluster does not hold, and I1–I3 hold after. The same for a redemption (I5).
//
// The interleaving is made deterministic by driving the gate's classes in this process against the
// real cluster (its own 3 masters × 2 replicas, every node announced through a proxy): the old
// master's answer is held on the wire (its proxy blackholed) until the client refreshed its slot map.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';
import { loadConfig } from '../../src/config.ts';
import { DomainError } from '../../src/domain/errors.ts';
import { isOutage } from '../../src/domain/outage.ts';
import { Alerter } from '../../src/events/alert.ts';
import { createPublishingKafka } from '../../src/events/kafka.ts';
import { BatchingPublisher } from '../../src/events/publisher.ts';
import { EventRegistry } from '../../src/events/registry.ts';
import { topicNames } from '../../src/events/topics.ts';
import { Gate } from '../../src/gate/gate.ts';
import { ledgerIsFinal } from '../../src/store/loss-guard.ts';
import { GateRebuilder } from '../../src/gate/rebuild.ts';
import { createRedemption } from '../../src/redemption/wiring.ts';
import { activeCouponsKey, couponKeys } from '../../src/store/keys.ts';
import { createRedis, nodeFor, redisReady, type Cluster } from '../../src/store/redis.ts';
import { ReplicaAcks } from '../../src/store/replica-acks.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedisCluster, type ClusterNodeProcess, type OwnRedisCluster } from '../support/redis-cluster.ts';
import { config, db as newDb, kafka, readTopic, testLog, uniqueEnv, until, waitForCaughtUp, dropEnvironment } from '../support/stack.ts';

const db = newDb();
const k = kafka();
let cluster: OwnRedisCluster;
let env: Record<string, string>;
let api: ServiceProcess;
let client: CouponClient;
const base = { ...uniqueEnv('failover-wait'), API_WORKERS: '1', KAFKA_TOPIC_PARTITIONS: '1', ISSUE_BACKOFF_MS: '200', RECOVERY_INTERVAL_MS: '500' };
const topics = topicNames(base.KAFKA_TOPIC_PREFIX);

beforeAll(async () => {
  cluster = await startOwnRedisCluster({ replicasPerMaster: 2, viaProxies: true });
  env = { ...base, REDIS_CLUSTER_NODES: cluster.seeds, REDIS_URL: 'redis://127.0.0.1:1/0' };
  api = await startService('api', env);
  client = couponClient(api.address);
}, 120_000);

afterAll(async () => {
  client?.close();
  await api?.stop();
  await cluster?.stop();
  await db.destroy();
  await dropEnvironment(k, topics);
});

/** The gate and redemption as coupon-api builds them (server/app.ts), over this process's own cluster client. */
async function ownServices() {
  // Longer than the test holds the old master's answer: the answer, not a timeout, must decide.
  const redis = createRedis({ url: env.REDIS_URL!, clusterNodes: cluster.seeds.split(','), commandTimeoutMs: 120_000 }) as Cluster;
  await redisReady(redis);
  const scripts = new CouponScripts(redis);
  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  const encoder = await registry.forTopic(topics.issue, CouponIssueRequestedSchema);
  const publishing = createPublishingKafka(config.KAFKA_BROKERS, `${env.KAFKA_CLIENT_ID}-test-gate`, testLog, 5_000);
  const publisher = new BatchingPublisher(publishing.producer, { lingerMs: 2, maxBatch: 500, timeoutMs: 5_000, fence: publishing.fence }, testLog);
  await publisher.connect();
  const admin = k.admin();
  await admin.connect();
  const gate = new Gate({
    redis, scripts, publisher, encoder, topic: topics.issue, log: testLog, publishTimeoutMs: 5_000,
    rebuilder: new GateRebuilder({ db, redis, scripts, log: testLog, guard: ledgerIsFinal }),
    acks: new ReplicaAcks(redis, { replicas: 1, timeoutMs: 500 }),
  });
  const redemption = await createRedemption({
    config: loadConfig({ KAFKA_TOPIC_PREFIX: env.KAFKA_TOPIC_PREFIX, KAFKA_REDEMPTION_GROUP: env.KAFKA_REDEMPTION_GROUP, REDIS_CLUSTER_NODES: cluster.seeds }),
    log: testLog, db, redis, registry, publisher, admin, alerter: new Alerter(testLog, undefined),
  });
  return { redis, gate, redemption, async close() { await Promise.allSettled([publisher.disconnect(), admin.disconnect()]); redis.disconnect(); } };
}
type Own = Awaited<ReturnType<typeof ownServices>>;

/** What the caller hears, mapped as coupon-api's error interceptor maps it (server/interceptors.ts). */
type Answer = { ok: true } | { ok: false; reason: string };
const answerOf = (p: Promise<unknown>): Promise<Answer> => p.then(
  () => ({ ok: true }),
  (err: unknown) => {
    if (err instanceof DomainError) return { ok: false, reason: err.reason };
    // E.g. READONLY: the old master, demoted by the time it ran the script, refused its write.
    if (isOutage(err)) return { ok: false, reason: 'BACKEND_UNAVAILABLE' };
    throw err;
  },
);

async function replication(node: ClusterNodeProcess) {
  const info = await node.client.info('replication');
  return { role: /^role:(\w+)/m.exec(info)?.[1], masterPort: Number(/^master_port:(\d+)/m.exec(info)?.[1] ?? 0), linkUp: /^master_link_status:up/m.test(info) };
}
const follows = async (node: ClusterNodeProcess, master: ClusterNodeProcess) => {
  const r = await replication(node);
  return r.role === 'slave' && (r.masterPort === master.port || r.masterPort === master.announcedPort) && r.linkUp;
};

/**
 * Pauses the coupon's master with the script `send` starts in its socket; one of its two replicas
 * takes over; the old master wakes (its answers held on the wire), runs the script, learns of the
 * takeover and resyncs as a replica; the client learns the new master; then the answer arrives.
 */
async function failoverWhileSent(own: Own, couponId: string, send: () => Promise<Answer>): Promise<{ answer: Answer; newMaster: ClusterNodeProcess }> {
  const meta = couponKeys(couponId).meta;
  const old = await cluster.masterOf(meta);
  const [taker, other] = await cluster.replicasOf(old.port);
  expect(other, 'two replicas per master').toBeDefined();
  old.child.kill('SIGSTOP');
  let answer: Promise<Answer> | undefined;
  try {
    answer = send();
    // The script is in the paused master's socket; a replica takes over without it.
    await new Promise((r) => setTimeout(r, 500));
    await taker!.client.call('CLUSTER', 'FAILOVER', 'TAKEOVER');
    await until('the other replica follows the new master', async () => (await replication(taker!)).role === 'master' && await follows(other!, taker!) || undefined, 20_000, 100);
    // The old master's answers are held on the wire from now on.
    old.proxy!.blackhole();
    old.child.kill('SIGCONT');
    // It ran what was in its socket, then learnt of the takeover and rejoined as a replica
    // (dropping its own writes in the full resync), and the cluster sees it as one.
    await until('the old master resynced as a replica of the new one', async () => await follows(old, taker!) || undefined, 30_000, 100);
    await until('every node sees the old master as a healthy replica', async () => {
      for (const n of cluster.nodes) {
        if (n === old) continue;
        const line = String(await n.client.call('CLUSTER', 'NODES')).split('\n').find((l) => l.includes(`:${old.announcedPort}@`));
        if (!line || !/\bslave\b/.test(line) || /\bfail\??\b/.test(line)) return undefined;
      }
      return true;
    }, 30_000, 100);
    // The client learns the new master, while its connection to the old one is still open
    // and the answer it waits for there is still on its way.
    await new Promise<void>((resolve, reject) => own.redis.refreshSlotsCache((err) => (err ? reject(err) : resolve())));
    expect(nodeFor(own.redis, meta)?.options.port).toBe(taker!.announcedPort);
  } finally {
    old.proxy!.lift();
    old.child.kill('SIGCONT');
  }
  return { answer: await answer, newMaster: taker! };
}

/** Retries through coupon-api while it answers UNAVAILABLE BACKEND_UNAVAILABLE, as a caller told so would. */
async function retried<T>(call: () => Promise<T>): Promise<T> {
  return until('a decision', async () => {
    try {
      return await call();
    } catch (err) {
      if (err instanceof CouponCallError && err.reason === 'BACKEND_UNAVAILABLE') return undefined;
      throw err;
    }
  }, 30_000, 200);
}

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number; order_id: string | null }[]>('user_id', 'seq', 'order_id');

describe('WAIT after a failover', () => {
  it('never answers OK for a reservation the old master ran after a replica took over; I1–I3 hold after', { timeout: 120_000 }, async () => {
    const coupon = await createCoupon(client, 3);
    const keys = couponKeys(coupon.id);
    const own = await ownServices();
    const told = new Map<string, number>();
    let issuer: ServiceProcess | undefined;
    try {
      expect(await own.gate.issue(coupon.id, 'warm')).toMatchObject({ seq: 1 });
      told.set('warm', 1);

      const { answer, newMaster } = await failoverWhileSent(own, coupon.id, () => answerOf(own.gate.issue(coupon.id, 'victim')));
      // What the surviving cluster holds, read on the new master.
      const held = await newMaster.client.hget(keys.winners, 'victim');
      // OK only for what the new master holds; the slot moved under the call, so UNAVAILABLE.
      if (answer.ok) expect({ answer, held }).toEqual({ answer, held: expect.stringMatching(/^\d+$/) as unknown });
      expect(answer).toEqual({ ok: false, reason: 'BACKEND_UNAVAILABLE' });

      // Told UNAVAILABLE, the user retries (through coupon-api) and hears what survived.
      told.set('victim', Number((await retried(() => client.issueCoupon({ couponId: coupon.id, userId: 'victim' }))).seq));

      // I1–I3: the new master and the ledger hold exactly the users told OK, each with the seq it was told.
      for (const [userId, seq] of told) expect(await newMaster.client.hget(keys.winners, userId), userId).toBe(String(seq));
      issuer = await startService('issuer', env);
      await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP!, topics.issue, 60_000);
      await until('a row for every user told OK', async () => (await ledger(coupon.id)).length >= told.size || undefined, 30_000);
      const rows = await ledger(coupon.id);
      expect(new Map(rows.map((r) => [r.user_id, Number(r.seq)]))).toEqual(told);
      expect(rows.length).toBeLessThanOrEqual(3);
      expect(new Set(rows.map((r) => r.seq)).size).toBe(rows.length);
      expect(await readTopic(k, topics.issueDlt, (key) => key === coupon.id)).toHaveLength(0);
    } finally {
      await issuer?.stop();
      await own.close();
    }
  });

  it('never answers OK for a redemption the old master ran after a replica took over; it is redeemed for one order after', { timeout: 120_000 }, async () => {
    // A coupon on another shard than the recovery index, which redemption marks before its script.
    const indexMaster = (await cluster.masterOf(activeCouponsKey(env.KAFKA_TOPIC_PREFIX!))).port;
    // Before the failover, UNAVAILABLE ("retry") is retried as a caller would: a loaded machine's
    // cluster can be slow to answer or acknowledge.
    let coupon = await retried(() => createCoupon(client, 3, { validForMs: 3_600_000 }));
    while ((await cluster.masterOf(couponKeys(coupon.id).meta)).port === indexMaster) coupon = await retried(() => createCoupon(client, 3, { validForMs: 3_600_000 }));
    const keys = couponKeys(coupon.id);
    const own = await ownServices();
    const issuer = await startService('issuer', env);
    try {
      for (const userId of ['first', 'buyer']) {
        await retried(() => client.issueCoupon({ couponId: coupon.id, userId }));
        await until(`${userId} issued`, async () => (await client.getUserCoupon({ couponId: coupon.id, userId })).userCoupon!.state === UserCouponState.ISSUED || undefined, 30_000);
      }
      // The coupon's first redemption loads its redemption state (an extra script call): done
      // before, so the call under test is one script.
      await retried(() => client.redeemCoupon({ couponId: coupon.id, userId: 'first', orderId: 'order-0' }));

      const { answer, newMaster } = await failoverWhileSent(own, coupon.id, () => answerOf(own.redemption.redeem(coupon.id, 'buyer', 'order-1')));
      const held = await newMaster.client.hget(keys.redeem, 'buyer');
      // OK only for what the new master holds. (Whether the old master ran the script before it
      // learnt of the takeover, or answered MOVED and the client ran it on the new master, varies
      // from run to run here; either way the slot moved under the call, and it is UNAVAILABLE.)
      if (answer.ok) expect({ answer, held }).toEqual({ answer, held: expect.stringMatching(/^R\|order-1\|/) as unknown });
      expect(answer).toEqual({ ok: false, reason: 'BACKEND_UNAVAILABLE' });

      // The payment service retries with the same order id and hears what survived.
      const redeemed = await retried(() => client.redeemCoupon({ couponId: coupon.id, userId: 'buyer', orderId: 'order-1' }));
      expect(redeemed.userCoupon!.state).toBe(UserCouponState.REDEEMED);
      expect(await newMaster.client.hget(keys.redeem, 'buyer')).toMatch(/^R\|order-1\|/);
      // I5: redeemed for that one order, in the ledger too.
      await until('the redemption in the ledger', async () => (await ledger(coupon.id)).find((r) => r.user_id === 'buyer')?.order_id === 'order-1' || undefined, 30_000);
      expect(await ledger(coupon.id)).toEqual([{ user_id: 'first', seq: 1, order_id: 'order-0' }, { user_id: 'buyer', seq: 2, order_id: 'order-1' }]);
      expect(await readTopic(k, topics.redemptionDlt, (key) => key === coupon.id)).toHaveLength(0);
    } finally {
      await issuer.stop();
      await own.close();
    }
  });
});
