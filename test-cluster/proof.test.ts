// The proof on the clustered local stack (three KRaft brokers, Redis Cluster 3+3),
// with coupon-api (two workers) and two coupon-issuer processes in one consumer group, on topics
// of this file's own (replication factor 3, min.insync.replicas 2).
//
// One sale (Q units, 3·Q users) with three faults in turn, each mid-sale:
//   1. SIGKILL of the broker leading the sale's partition (it stays down until the sale is checked);
//   2. SIGKILL of the Redis master holding the coupon's slot: its replica takes over, and the old
//      master is restarted and rejoins as the new one's replica (with REDIS_WAIT_REPLICAS=1 the
//      shard answers UNAVAILABLE until then);
//   3. SIGKILL of the coupon-issuer that consumes the sale's partition: the other one takes it over.
// Callers retry UNAVAILABLE answers (BACKEND_UNAVAILABLE, PUBLISH_FAILED, a deadline) as a real
// client would, for a bounded time. Then I1–I4: every user told OK has their record on the topic
// (read with the broker still dead) and their row in PostgreSQL with the seq they were told, and no
// one else does; Q rows, seqs 1..Q once each, no dead letter.
//
// Then redemption on the same coupon through another failover of its master (I5): the ledger's
// order_id, redemption_version and redemption_cancellations equal what callers were told OK.
//
// Run with `npm run test:cluster` (scripts/test-cluster.ts) after `npm run stack:up -- --cluster`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromBinary } from '@bufbuild/protobuf';
import { AssignerProtocol } from 'kafkajs';
import { CouponIssueRequestedSchema } from '../gen/coupon/events/v1/issue_pb.js';
import { UserCouponState } from '../gen/coupon/v1/coupon_pb.js';
import { CouponCallError } from '../src/client/grpc.ts';
import { topicNames } from '../src/events/topics.ts';
import { decodeFrame } from '../src/events/wire-format.ts';
import { couponKeys } from '../src/store/keys.ts';
import { keySlot } from '../src/store/redis.ts';
import {
  clusterBrokers, killBroker, killRedisMaster, redisMasters, redisPorts, restartRedisNode, startBroker,
  waitForKafkaCluster, waitForRedisCluster, redisClusterInfo,
} from '../scripts/cluster-stack.ts';
import { startService, type ServiceProcess } from '../test/support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../test/support/coupons.ts';
import { createKafka } from '../src/events/kafka.ts';
import { createLogger } from '../src/log.ts';
import { config, db as newDb, readTopic, uniqueEnv, until, waitForCaughtUp } from '../test/support/stack.ts';

const Q = Number(process.env.PROOF_QUANTITY ?? 300);
const USERS = 3 * Q;
/** Calls started per second while units remain, so each fault lands in the middle of the sale. */
const RATE = Number(process.env.PROOF_RATE ?? 40);
const CALLERS = 16;
const RETRY_FOR_MS = 60_000;

const db = newDb();
// Quiet: while a broker is dead, every new client logs its refused connection to it.
const k = createKafka(config.KAFKA_BROKERS, `proof-${process.pid}`, createLogger('proof', 'silent'));
const base = {
  ...uniqueEnv('proof'),
  KAFKA_TOPIC_PARTITIONS: '3',
  ISSUE_BACKOFF_MS: '200',
  RECOVERY_INTERVAL_MS: '1000',
  PUBLISH_TIMEOUT_MS: '4000',
  // The cluster's default, stated: an OK waits for a replica's acknowledgement.
  REDIS_WAIT_REPLICAS: '1',
};
const topics = topicNames(base.KAFKA_TOPIC_PREFIX);
const issuerIds = ['a', 'b'] as const;
let api: ServiceProcess;
const issuers = new Map<string, ServiceProcess>();
let clients: CouponClient[] = [];
let couponId: string;
/** user → seq, every OK heard during the sale. */
const told = new Map<string, number>();

const say = (line: string) => console.log(`[proof] ${line}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const since = (t: number) => `${((Date.now() - t) / 1000).toFixed(1)} s`;

beforeAll(async () => {
  const t0 = Date.now();
  // A previous run that stopped half-way may have left a node down: bring the cluster back whole.
  for (const b of clusterBrokers) await startBroker(b.index);
  for (const port of redisPorts) if (!redisClusterInfo(port)) await restartRedisNode(port);
  await Promise.all([waitForKafkaCluster({ timeoutMs: 90_000 }), waitForRedisCluster()]);
  const started = await Promise.all([
    startService('api', { ...base, API_WORKERS: '2' }),
    ...issuerIds.map((id) => startService('issuer', { ...base, KAFKA_CLIENT_ID: `${base.KAFKA_CLIENT_ID}-${id}` })),
  ]);
  api = started[0]!;
  issuerIds.forEach((id, i) => issuers.set(id, started[i + 1]!));
  // Separate connections, so both coupon-api workers take calls.
  clients = Array.from({ length: 4 }, () => couponClient(api.address, true));
  say(`coupon-api (2 workers) and 2 coupon-issuers up on prefix ${base.KAFKA_TOPIC_PREFIX} in ${since(t0)}`);
});

afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all([api?.stop(), ...[...issuers.values()].map((p) => p.stop())]);
  // Leave the cluster whole for the next run.
  for (const b of clusterBrokers) await startBroker(b.index).catch(() => undefined);
  for (const port of redisPorts) if (!redisClusterInfo(port)) await restartRedisNode(port).catch(() => undefined);
  const admin = k.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => undefined);
  await admin.disconnect();
  for (const topic of [topics.issue, topics.redemption, topics.paymentResult]) {
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value`, { method: 'DELETE' }).catch(() => undefined);
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value?permanent=true`, { method: 'DELETE' }).catch(() => undefined);
  }
  await db.destroy();
});

// ------------------------------------------------------------------------------------- callers

const RETRYABLE = new Set(['BACKEND_UNAVAILABLE', 'PUBLISH_FAILED']);
/** Why a call may be retried: an UNAVAILABLE answer, or no answer (deadline, connection). */
const retryable = (err: CouponCallError) => RETRYABLE.has(err.reason) || err.reason === '';
const retries = new Map<string, number>();
const countRetry = (why: string) => retries.set(why, (retries.get(why) ?? 0) + 1);
const retrySummary = () => [...retries].map(([why, n]) => `${why || 'no answer'} ${n}`).join(', ') || 'none';

let turn = 0;
const nextClient = () => clients[turn++ % clients.length]!;

/** Calls until a decision (OK or a refusal that is not "retry"), for at most RETRY_FOR_MS. */
async function untilDecided<T>(call: (c: CouponClient) => Promise<T>): Promise<{ ok: true; res: T; startedAt: number } | { ok: false; reason: string }> {
  const deadline = Date.now() + RETRY_FOR_MS;
  for (;;) {
    const startedAt = Date.now();
    try {
      return { ok: true, res: await call(nextClient()), startedAt };
    } catch (err) {
      if (!(err instanceof CouponCallError)) throw err;
      if (!retryable(err) || Date.now() > deadline) return { ok: false, reason: err.reason || `code ${err.code}` };
      countRetry(err.reason);
      await sleep(150);
    }
  }
}

/** A token bucket of `rate` call starts per second; off once `open()` says so. */
function pacer(rate: number, open: () => boolean) {
  let nextAt = Date.now();
  return async () => {
    if (open()) return;
    const at = Math.max(nextAt, Date.now());
    nextAt = at + 1000 / rate;
    await sleep(at - Date.now());
  };
}

// ---------------------------------------------------------------------------------- cluster map

async function issuePartition(): Promise<{ partition: number; leader: number }> {
  const admin = k.admin();
  await admin.connect();
  try {
    // The topic is this file's own and the sale's records share one key: one partition has records.
    const offsets = await admin.fetchTopicOffsets(topics.issue);
    const used = offsets.find((o) => Number(o.high) > 0);
    if (!used) throw new Error(`no record on ${topics.issue} yet`);
    const { topics: [meta] } = await admin.fetchTopicMetadata({ topics: [topics.issue] });
    const leader = meta!.partitions.find((p) => p.partitionId === used.partition)!.leader;
    return { partition: used.partition, leader };
  } finally { await admin.disconnect(); }
}

/** Which issuer (a or b) has `partition` of the issue topic now, by the members' client ids. */
async function issuerOwning(partition: number): Promise<string | undefined> {
  const admin = k.admin();
  await admin.connect();
  try {
    const { groups: [group] } = await admin.describeGroups([base.KAFKA_ISSUER_GROUP]);
    for (const m of group?.members ?? []) {
      const assignment = AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment ?? {};
      if ((assignment[topics.issue] ?? []).includes(partition)) return issuerIds.find((id) => m.clientId === `${base.KAFKA_CLIENT_ID}-${id}-issuer`);
    }
    return undefined;
  } finally { await admin.disconnect(); }
}

/** Index (in slot order) of the Redis master now serving the coupon's slot. */
function masterOfCoupon(id: string): { index: number; port: number } {
  const slot = keySlot(couponKeys(id).meta);
  const master = redisMasters().find((m) => m.slots.some((range) => {
    const [from, to = from] = range.split('-').map(Number);
    return slot >= from! && slot <= to!;
  }));
  if (!master) throw new Error(`no master serves slot ${slot}`);
  return { index: master.index, port: master.port };
}

const ledger = (id: string) => db('user_coupons').where({ coupon_id: id }).orderBy('seq')
  .select<{ user_id: string; seq: string | number; order_id: string | null; redemption_version: string | number }[]>('user_id', 'seq', 'order_id', 'redemption_version');

// ------------------------------------------------------------------------------------------ proof

describe('the clustered stack under faults', () => {
  let deadBroker: number | undefined;
  let partition = -1;

  it(`one sale of ${Q} units to ${USERS} users survives a broker, a Redis master and an issuer killed mid-sale (I1–I4)`, async () => {
    const t0 = Date.now();
    couponId = (await createCoupon(clients[0]!, Q, { validForMs: 3_600_000, name: 'cluster proof' })).id;
    const users = Array.from({ length: USERS }, (_, i) => `proof-user-${i}`);
    const refusals = new Map<string, number>();
    let soldOut = false;
    const pace = pacer(RATE, () => soldOut);
    const faults: Promise<void>[] = [];
    const okTimes: [startedAt: number, answeredAt: number][] = [];
    /** How long after `t` the first OK to a call made after `t` came. */
    const firstOkAfter = (t: number) => until('an OK to a call made after the fault', () => {
      const first = okTimes.find(([startedAt]) => startedAt >= t);
      return Promise.resolve(first ? first[1] - t : undefined);
    }, 90_000, 20);

    // 1. Kafka: SIGKILL the broker leading the sale's partition.
    const kafkaFault = async () => {
      const where = await issuePartition();
      partition = where.partition;
      const index = clusterBrokers.findIndex((b) => b.nodeId === where.leader);
      const at = Date.now();
      const okBefore = told.size;
      await killBroker(index);
      deadBroker = index;
      const [fenced, stall] = await Promise.all([
        waitForKafkaCluster({ brokers: 2, fullIsr: false, timeoutMs: 60_000 }).then(() => Date.now() - at),
        firstOkAfter(at),
      ]);
      say(`kafka: killed broker ${where.leader} (leader of ${topics.issue}-${partition}) after ${okBefore} OKs; fenced after ${fenced} ms; first OK to a call made after the kill ${stall} ms later`);
    };
    // 2. Redis: SIGKILL the coupon's master; restart it once its replica took over.
    const redisFault = async () => {
      const master = masterOfCoupon(couponId);
      const okBefore = told.size;
      const at = Date.now();
      const { killedPort, promotedPort, failoverMs } = await killRedisMaster(master.index);
      const back = await restartRedisNode(killedPort);
      const rejoinMs = Date.now() - at;
      const stall = await firstOkAfter(at);
      say(`redis: killed master ${killedPort} (coupon's slot ${keySlot(couponKeys(couponId).meta)}) after ${okBefore} OKs; ${promotedPort} took over in ${failoverMs} ms; ${killedPort} back as ${back.role} of ${back.masterPort} after ${rejoinMs} ms; first OK to a call made after the kill ${stall} ms later`);
    };
    // 3. Issuer: SIGKILL the coupon-issuer consuming the sale's partition.
    const issuerFault = async () => {
      const owner = await until('an issuer owning the partition', () => issuerOwning(partition), 30_000);
      const other = issuerIds.find((id) => id !== owner)!;
      const rowsBefore = (await ledger(couponId)).length;
      const okBefore = told.size;
      const at = Date.now();
      await issuers.get(owner)!.kill();
      const takeover = await until(`issuer ${other} to take partition ${partition} over`, async () => (await issuerOwning(partition)) === other && Date.now() - at, 60_000, 250);
      const firstRow = await until('a row written after the kill', async () => (await ledger(couponId)).length > rowsBefore && Date.now() - at, 60_000, 250)
        .catch(() => undefined);
      say(`issuer: killed coupon-issuer ${owner} after ${okBefore} OKs (${rowsBefore} rows written); issuer ${other} holds partition ${partition} after ${takeover} ms${firstRow ? `, wrote its first row after ${firstRow} ms` : ''}`);
    };
    const plan: [threshold: number, fault: () => Promise<void>][] = [[Math.round(Q * 0.1), kafkaFault], [Math.round(Q * 0.35), redisFault], [Math.round(Q * 0.65), issuerFault]];

    let busy = false;
    let next = 0;
    const caller = async () => {
      while (next < users.length) {
        const userId = users[next++]!;
        await pace();
        const a = await untilDecided((c) => c.issueCoupon({ couponId, userId }, { timeoutMs: 15_000 }));
        if (a.ok) {
          const seq = Number(a.res.seq);
          expect(told.get(userId) ?? seq, `${userId} told two seqs`).toBe(seq);
          told.set(userId, seq);
          okTimes.push([a.startedAt, Date.now()]);
          // One fault at a time: the next starts at its threshold once the previous one is over.
          if (plan[0] && told.size >= plan[0][0] && !busy) {
            busy = true;
            faults.push(plan.shift()![1]().finally(() => { busy = false; }));
          }
        } else {
          refusals.set(a.reason, (refusals.get(a.reason) ?? 0) + 1);
          if (a.reason === 'COUPON_SOLD_OUT') soldOut = true;
        }
      }
    };
    await Promise.all(Array.from({ length: CALLERS }, caller));
    const saleTime = since(t0);
    await Promise.all(faults);
    say(`sale: ${users.length} users, ${told.size} OK, refusals ${[...refusals].map(([r, n]) => `${r} ${n}`).join(', ')}; retries ${retrySummary()}; ${saleTime}`);
    expect(plan, 'every fault happened mid-sale').toEqual([]);
    expect.soft([...refusals.keys()], 'refusals other than sold out').toEqual(['COUPON_SOLD_OUT']);
    expect.soft(told.size).toBe(Q);

    // Every OK is on the topic, read while the killed broker is still down.
    const records = (await readTopic(k, topics.issue, (key) => key === couponId)).map((r) => fromBinary(CouponIssueRequestedSchema, decodeFrame(r.value).payload));
    const onTopic = new Map<string, Set<number>>();
    for (const r of records) onTopic.set(r.userId, (onTopic.get(r.userId) ?? new Set()).add(Number(r.seq)));
    const notOnTopic = [...told].filter(([u, seq]) => !onTopic.get(u)?.has(seq));
    expect(notOnTopic, 'told OK but not on the topic').toEqual([]);
    say(`topic: ${records.length} records (${records.length - Q} released or repeated), every OK among them, broker ${clusterBrokers[deadBroker!]!.nodeId} still down`);

    // Restart the broker; the surviving issuer finishes; I1–I4 on the ledger.
    const restartAt = Date.now();
    await startBroker(deadBroker!);
    await waitForCaughtUp(k, base.KAFKA_ISSUER_GROUP, topics.issue, 90_000);
    await until('a row for every OK', async () => (await ledger(couponId)).length >= Q, 30_000).catch(() => undefined);
    const rows = await ledger(couponId);
    const held = new Map(rows.map((r) => [r.user_id, Number(r.seq)]));
    const deadLetters = await readTopic(k, topics.issueDlt, (key) => key === couponId);
    expect({
      missing: [...told].filter(([u, seq]) => held.get(u) !== seq),
      extra: rows.filter((r) => !told.has(r.user_id)).map((r) => r.user_id),
      deadLetters: deadLetters.map((m) => m.headers['x-error-reason']),
    }).toEqual({ missing: [], extra: [], deadLetters: [] });
    expect(rows.length).toBe(Q);
    expect(new Set(rows.map((r) => r.user_id)).size).toBe(Q);
    expect(rows.map((r) => Number(r.seq))).toEqual(Array.from({ length: Q }, (_, i) => i + 1));
    expect(held).toEqual(told);
    const whole = await waitForKafkaCluster({ timeoutMs: 90_000 });
    say(`ledger: ${rows.length} rows = the ${told.size} OKs (same seqs), seqs 1..${Q}, 0 dead letters; broker back and in sync ${since(restartAt)} after its restart (brokers [${whole.brokers.join(',')}])`);
  });

  it('redemption through a failover of the coupon\'s master: the ledger holds exactly what callers were told (I5)', async () => {
    expect(told.size, 'the sale ran').toBe(Q);
    const t0 = Date.now();
    const winners = [...told.keys()].sort().slice(0, Math.min(90, Q));
    await until('the winners ISSUED', async () => {
      const states = await Promise.all(winners.map((userId) => nextClient().getUserCoupon({ couponId, userId })));
      return states.every((s) => s.userCoupon!.state === UserCouponState.ISSUED);
    }, 60_000, 500);
    /** user → the order redeeming it now (null: none) and the redemption version the ledger must hold. */
    const expected = new Map<string, { orderId: string | null; version: number }>();
    const cancelled: string[] = [];
    const refusals: string[] = [];
    retries.clear();
    let failover: Promise<void> | undefined;
    const okStarts: number[] = [];
    const okAnswers: number[] = [];
    const pace = pacer(RATE, () => false);

    const redeemAll = async (list: string[], killAfter: number) => {
      let next = 0;
      await Promise.all(Array.from({ length: 8 }, async () => {
        while (next < list.length) {
          const userId = list[next++]!;
          const orderId = `order-${userId}`;
          await pace();
          const a = await untilDecided((c) => c.redeemCoupon({ couponId, userId, orderId }, { timeoutMs: 15_000 }));
          if (!a.ok) { refusals.push(`redeem ${userId}: ${a.reason}`); continue; }
          expect(a.res.userCoupon!.orderId).toBe(orderId);
          expected.set(userId, { orderId, version: 1 });
          okStarts.push(a.startedAt);
          const answeredAt = Date.now();
          okAnswers.push(answeredAt);
          if (!failover && expected.size >= killAfter) {
            failover = (async () => {
              const master = masterOfCoupon(couponId);
              const okBefore = expected.size;
              const at = Date.now();
              const { killedPort, promotedPort, failoverMs } = await killRedisMaster(master.index);
              const back = await restartRedisNode(killedPort);
              const rejoinMs = Date.now() - at;
              const stall = await until('an OK to a call made after the kill', () => {
                const i = okStarts.findIndex((startedAt) => startedAt >= at);
                return Promise.resolve(i >= 0 ? okAnswers[i]! - at : undefined);
              }, 90_000, 20);
              say(`redemption: killed master ${killedPort} after ${okBefore} redeems; ${promotedPort} took over in ${failoverMs} ms; ${killedPort} back as ${back.role} after ${rejoinMs} ms; first OK to a call made after the kill ${stall} ms later`);
            })();
          }
        }
      }));
    };
    await redeemAll(winners, Math.round(winners.length / 3));
    await failover;

    // Cancel every third redemption; a late redeem of a cancelled order is refused.
    for (const [i, userId] of winners.entries()) {
      if (i % 3 !== 0) continue;
      const orderId = `order-${userId}`;
      const a = await untilDecided((c) => c.cancelRedemption({ couponId, userId, orderId }, { timeoutMs: 15_000 }));
      if (!a.ok) { refusals.push(`cancel ${userId}: ${a.reason}`); continue; }
      expect(a.res.userCoupon!.state).toBe(UserCouponState.ISSUED);
      expected.set(userId, { orderId: null, version: 2 });
      cancelled.push(`${userId}/${orderId}`);
    }
    for (const userId of winners.filter((_, i) => i % 3 === 0).slice(0, 5)) {
      const a = await untilDecided((c) => c.redeemCoupon({ couponId, userId, orderId: `order-${userId}` }, { timeoutMs: 15_000 }));
      expect(a).toEqual({ ok: false, reason: 'REDEMPTION_CANCELLED' });
    }
    if (refusals.length) {
      const logged = new Set(api.logs.filter((l) => Number(l.level) >= 50).map((l) => `${String(l.msg)} ${JSON.stringify(l.err ?? l.error ?? '')}`.slice(0, 600)));
      say(`unexpected refusals; coupon-api logged:\n${[...logged].join('\n')}`);
    }
    expect.soft(refusals).toEqual([]);

    await waitForCaughtUp(k, base.KAFKA_REDEMPTION_GROUP, topics.redemption, 90_000);
    const rows = await ledger(couponId);
    const byUser = new Map(rows.map((r) => [r.user_id, { orderId: r.order_id, version: Number(r.redemption_version) }]));
    const mismatched = rows.filter((r) => {
      const want = expected.get(r.user_id) ?? { orderId: null, version: 0 };
      const got = byUser.get(r.user_id)!;
      return got.orderId !== want.orderId || got.version !== want.version;
    }).map((r) => ({ user: r.user_id, got: byUser.get(r.user_id), want: expected.get(r.user_id) ?? { orderId: null, version: 0 } }));
    expect(mismatched).toEqual([]);
    const cancellations = await db('redemption_cancellations').where({ coupon_id: couponId }).select<{ user_id: string; order_id: string }[]>('user_id', 'order_id');
    expect(cancellations.map((c) => `${c.user_id}/${c.order_id}`).sort()).toEqual([...cancelled].sort());
    expect(await readTopic(k, topics.redemptionDlt, (key) => key === couponId)).toEqual([]);
    // Redis agrees with the ledger.
    for (const userId of winners) {
      const uc = (await nextClient().getUserCoupon({ couponId, userId })).userCoupon!;
      expect({ user: userId, orderId: uc.orderId || null }).toEqual({ user: userId, orderId: expected.get(userId)!.orderId });
    }
    await waitForRedisCluster();
    const redeemed = [...expected.values()].filter((e) => e.orderId).length;
    say(`redemption: ${winners.length} redeemed, ${cancelled.length} cancelled (${redeemed} still redeemed), retries ${retrySummary()}; ledger = the OKs (order_id, redemption_version, ${cancellations.length} cancellations), 0 dead letters; ${since(t0)}`);
  });
});
