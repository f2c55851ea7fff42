// Redis restarts and loses everything (it keeps nothing on disk) while
// publishes are in flight, after releases, and while dead letters still own seqs. The services run
// against a redis-server of this file's own, restarted with SIGKILL; coupon-api reaches Kafka through
// a proxy that can hold its publishes in flight or swallow their acknowledgements. After each
// scenario the ledger must keep I1–I5: at most `total` rows, one per user, unique seqs, a row for
// every user told OK with the seq they were told, nothing dead-lettered SEQ_TAKEN, and at most one
// order redeemed per coupon, the one its caller was told about.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { CouponCallError } from '../../src/client/grpc.ts';
import { topicNames } from '../../src/events/topics.ts';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { run, startService, type ServiceProcess } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { kafkaProxy, type KafkaProxy } from '../support/kafka-proxy.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { config, db as newDb, kafka, readTopic, uniqueEnv, until, waitForCaughtUp, dropEnvironment } from '../support/stack.ts';

const PUBLISH_TIMEOUT_MS = 4_000;

const env = {
  ...uniqueEnv('redis-restart'),
  PUBLISH_TIMEOUT_MS: String(PUBLISH_TIMEOUT_MS),
  ISSUE_MAX_ATTEMPTS: '3',
  ISSUE_BACKOFF_MS: '100',
  KAFKA_TOPIC_PARTITIONS: '2',
};
const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
const db = newDb();
const k = kafka();
let redisServer: OwnRedis;
let r: Redis;
let proxy: KafkaProxy;
let api: ServiceProcess;
let issuer: ServiceProcess | undefined;
let client: CouponClient;
const startIssuer = async () => { issuer = await startService('issuer', { ...env, REDIS_URL: redisServer.url }); };

beforeAll(async () => {
  redisServer = await startOwnRedis();
  r = redisServer.client();
  proxy = await kafkaProxy(Number(config.KAFKA_BROKERS[0]!.split(':')[1]));
  [api] = await Promise.all([
    startService('api', { ...env, REDIS_URL: redisServer.url, KAFKA_BROKERS: proxy.brokers }),
    startIssuer(),
  ]);
  client = couponClient(api.address);
});

afterAll(async () => {
  client?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  await proxy?.close();
  await redisServer?.stop();
  await db.destroy();
  await dropEnvironment(k, topics);
});

type Outcome = { ok: true; seq: number } | { ok: false; code: number; reason: string; message: string };

const failed = (err: unknown): Outcome => {
  if (!(err instanceof CouponCallError)) throw err;
  return { ok: false, code: err.code, reason: err.reason, message: err.message };
};

/** What a caller hears, answer by answer. */
class Heard {
  readonly answers: { userId: string; outcome: Outcome }[] = [];
  add(userId: string, outcome: Outcome): Outcome { this.answers.push({ userId, outcome }); return outcome; }
  okSeqs(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const { userId, outcome } of this.answers) if (outcome.ok) out.set(userId, [...(out.get(userId) ?? []), outcome.seq]);
    return out;
  }
}

const issue = (heard: Heard, couponId: string, userId: string) => client.issueCoupon({ couponId, userId }, { timeoutMs: 30_000 })
  .then((res): Outcome => ({ ok: true, seq: Number(res.seq) }), failed)
  .then((o) => heard.add(userId, o));

/** A caller that retries UNAVAILABLE (PUBLISH_FAILED, BACKEND_UNAVAILABLE) until it hears something else. */
async function issueUntilDecided(heard: Heard, couponId: string, userId: string, timeoutMs = 90_000): Promise<{ outcome: Outcome; unavailable: string[] }> {
  const unavailable: string[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const outcome = await issue(heard, couponId, userId);
    if (outcome.ok || (outcome.reason !== 'BACKEND_UNAVAILABLE' && outcome.reason !== 'PUBLISH_FAILED') || Date.now() > deadline) return { outcome, unavailable };
    unavailable.push(outcome.message);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number; order_id: string | null }[]>('user_id', 'seq', 'order_id');

/** I1–I3 in the ledger, once the issuer has taken everything on the topic. */
async function expectGateInvariants(couponId: string, total: number, heard: Heard): Promise<void> {
  const told = heard.okSeqs();
  await until('a row for every user told OK', async () => {
    const rows = new Set((await ledger(couponId)).map((row) => row.user_id));
    return [...told.keys()].every((userId) => rows.has(userId));
  }, 60_000).catch(() => undefined);
  await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue);
  const rows = await ledger(couponId);
  expect(rows.length).toBeLessThanOrEqual(total);
  expect(new Set(rows.map((row) => row.user_id)).size).toBe(rows.length);
  expect(new Set(rows.map((row) => row.seq)).size).toBe(rows.length);
  const held = new Map(rows.map((row) => [row.user_id, row.seq]));
  for (const [userId, seqs] of told) {
    for (const seq of seqs) expect(held.get(userId), `${userId} was told OK with seq ${seq}`).toBe(seq);
  }
  const deadLettered = await readTopic(k, topics.issueDlt, (key) => key === couponId);
  expect(deadLettered.map((m) => m.headers['x-error-reason'])).not.toContain('SEQ_TAKEN');
}

describe('Redis restarts while a publish is in flight', () => {
  it('the gate is rebuilt only after the in-flight records landed: every user told OK keeps the seq they were told', { timeout: 180_000 }, async () => {
    const heard = new Heard();
    const coupon = await createCoupon(client, 10);
    for (const userId of ['early-1', 'early-2', 'early-3']) expect(await issue(heard, coupon.id, userId)).toMatchObject({ ok: true });
    await until('3 rows', async () => (await ledger(coupon.id)).length === 3);

    // Three publishes are in flight (reserved in Redis, held on their way to the broker) ...
    proxy.hold(true);
    const flying = ['flying-1', 'flying-2', 'flying-3'];
    const inFlight = Promise.all(flying.map((userId) => issue(heard, coupon.id, userId)));
    await until('3 reservations in flight', async () => (await r.zcard(couponKeys(coupon.id).pending)) === 3, 10_000, 20);
    const heldAt = Date.now();
    // ... when Redis restarts, losing the gate.
    await redisServer.restart();
    const late = ['late-1', 'late-2', 'late-3'];
    const lateAnswers = Promise.all(late.map((userId) => issueUntilDecided(heard, coupon.id, userId)));
    // A gate rebuilt now, from a ledger without the in-flight records, would hand their seqs to the
    // late users. Keep them in flight a while (well within PUBLISH_TIMEOUT_MS), then let them land.
    await until('a rebuild, or 2 s', async () => Date.now() - heldAt > 2_000 || (await r.hlen(couponKeys(coupon.id).winners)) >= 6, 10_000, 50);
    proxy.hold(false);
    proxy.release();

    const flew = await inFlight;
    const landed = await lateAnswers;
    // The in-flight publishes were acknowledged: those users were told OK.
    for (const outcome of flew) expect(outcome).toMatchObject({ ok: true });
    // The late users waited (UNAVAILABLE) for the rebuild, then won seqs nobody else holds.
    for (const { outcome } of landed) expect(outcome).toMatchObject({ ok: true });
    expect(landed.some(({ unavailable }) => unavailable.length > 0)).toBe(true);
    await expectGateInvariants(coupon.id, 10, heard);
    expect((await ledger(coupon.id)).map((row) => row.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('a redemption in flight is not redeemed again by another order: the load waits until it landed', { timeout: 180_000 }, async () => {
    const heard = new Heard();
    const coupon = await createCoupon(client, 2);
    expect(await issue(heard, coupon.id, 'buyer')).toMatchObject({ ok: true });
    await until('ISSUED', async () => (await client.getUserCoupon({ couponId: coupon.id, userId: 'buyer' })).userCoupon!.state === UserCouponState.ISSUED);

    type Redeemed = { orderId: string; ok: true } | { orderId: string; ok: false; reason: string; message: string };
    const redeem = (orderId: string) => client.redeemCoupon({ couponId: coupon.id, userId: 'buyer', orderId }, { timeoutMs: 30_000 })
      .then((): Redeemed => ({ orderId, ok: true }), (err: unknown) => { const o = failed(err) as Extract<Outcome, { ok: false }>; return { orderId, ok: false, reason: o.reason, message: o.message }; });
    const redeemUntilDecided = async (orderId: string): Promise<{ answer: Redeemed; unavailable: number }> => {
      let unavailable = 0;
      const deadline = Date.now() + 90_000;
      for (;;) {
        const answer = await redeem(orderId);
        if (answer.ok || (answer.reason !== 'BACKEND_UNAVAILABLE' && answer.reason !== 'PUBLISH_FAILED') || Date.now() > deadline) return { answer, unavailable };
        unavailable++;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    };

    // Order A's redemption is decided in Redis and on its way to Kafka ...
    proxy.hold(true);
    const first = redeem('order-A');
    await until('the redemption journaled', async () => (await r.zcard(couponKeys(coupon.id).outbox)) === 1, 10_000, 20);
    const heldAt = Date.now();
    // ... when Redis restarts; order B tries the same coupon.
    await redisServer.restart();
    const second = redeemUntilDecided('order-B');
    await until('order B decided, or 2 s', async () => Date.now() - heldAt > 2_000 || (await r.hget(couponKeys(coupon.id).redeem, 'buyer'))?.startsWith('R|order-B'), 10_000, 50);
    proxy.hold(false);
    proxy.release();

    const a = await first;
    const b = await second;
    expect(a).toMatchObject({ ok: true });
    expect(b.answer).toMatchObject({ ok: false, reason: 'COUPON_ALREADY_REDEEMED' });
    expect(b.unavailable).toBeGreaterThan(0);
    // I5: one order redeemed, and the ledger agrees with what its caller heard.
    await waitForCaughtUp(k, redemptionGroups(env.KAFKA_REDEMPTION_GROUP).ledger, topics.redemption);
    const told = [a, b.answer].filter((x) => x.ok).map((x) => x.orderId);
    expect(told.length).toBeLessThanOrEqual(1);
    const [row] = (await ledger(coupon.id)).filter((x) => x.user_id === 'buyer');
    expect(row?.order_id).toBe(told[0] ?? null);
    const redeemed = await client.getUserCoupon({ couponId: coupon.id, userId: 'buyer' });
    expect(redeemed.userCoupon).toMatchObject({ state: UserCouponState.REDEEMED, orderId: 'order-A' });
  });
});

describe('releases survive Redis losing everything', () => {
  it('a released record that landed after all is not issued once Redis lost its tombstone; the user who took the seq keeps it', { timeout: 180_000 }, async () => {
    const heard = new Heard();
    // Records wait on the topic until after the loss, as behind a lagging issuer.
    await issuer?.stop();
    issuer = undefined;
    try {
      const coupon = await createCoupon(client, 2);
      // The record reaches the broker, its acknowledgement does not: the caller is told to retry
      // and the slot is released.
      proxy.dropProduceAcks(true);
      const unlucky = await issue(heard, coupon.id, 'unlucky');
      proxy.dropProduceAcks(false);
      expect(unlucky).toMatchObject({ ok: false, reason: 'PUBLISH_FAILED' });
      await until('the released record on the topic', async () => (await readTopic(k, topics.issue, (key) => key === coupon.id)).length > 0);
      // Someone else takes the released seq, and is told OK.
      const lucky = await issueUntilDecided(heard, coupon.id, 'lucky');
      expect(lucky.outcome).toMatchObject({ ok: true, seq: 1 });

      await redisServer.restart();
      await startIssuer();
      const later = await issueUntilDecided(heard, coupon.id, 'later');
      expect(later.outcome).toMatchObject({ ok: true, seq: 2 });
      await expectGateInvariants(coupon.id, 2, heard);
      expect((await ledger(coupon.id)).map((row) => [row.user_id, row.seq])).toEqual([['lucky', 1], ['later', 2]]);
    } finally {
      if (!issuer) await startIssuer();
    }
  });
});

describe('dead letters are not forgotten by a rebuild', () => {
  const unreplayed = async (topic: string, couponId: string) => Number((await db('dead_letters').where({ topic, coupon_id: couponId }).whereNull('replayed_at').count<{ n: string }[]>({ n: '*' }))[0]!.n);

  it('a seq whose record sits unreplayed in the dead-letter topic blocks the rebuild, with an alert; after the replay the seq stays with its user', { timeout: 180_000 }, async () => {
    const heard = new Heard();
    const coupon = await createCoupon(client, 5);
    for (const userId of ['first', 'second']) expect(await issue(heard, coupon.id, userId)).toMatchObject({ ok: true });
    await until('2 rows', async () => (await ledger(coupon.id)).length === 2);

    // The ledger refuses one user's row until the cause is fixed: the issuer dead-letters it.
    const trigger = `refuse_${coupon.id.replaceAll('-', '')}`;
    await db.raw(`CREATE FUNCTION ${trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      IF NEW.coupon_id = '${coupon.id}' AND NEW.user_id = 'dead-lettered' THEN RAISE EXCEPTION 'the ledger refuses this row (test)'; END IF;
      RETURN NEW; END $$`);
    await db.raw(`CREATE TRIGGER ${trigger} BEFORE INSERT ON user_coupons FOR EACH ROW EXECUTE FUNCTION ${trigger}()`);
    try {
      expect(await issue(heard, coupon.id, 'dead-lettered')).toMatchObject({ ok: true, seq: 3 });
      const [dead] = await until('the record dead-lettered', async () => {
        const records = await readTopic(k, topics.issueDlt, (key) => key === coupon.id);
        return records.length === 1 ? records : undefined;
      }, 60_000, 500);
      // coupon-issuer records each dead letter in dead_letters before sending it; the same row is
      // written here, idempotently, so the rule under test does not depend on who records it.
      await db('dead_letters').insert({ topic: dead!.headers['x-source-topic'], partition: Number(dead!.headers['x-source-partition']), offset: dead!.headers['x-source-offset'], coupon_id: coupon.id, reason: dead!.headers['x-error-reason'] })
        .onConflict(['topic', 'partition', 'offset']).ignore();
      expect(await unreplayed(topics.issue, coupon.id)).toBe(1);
    } finally {
      await db.raw(`DROP TRIGGER ${trigger} ON user_coupons`);
      await db.raw(`DROP FUNCTION ${trigger}()`);
    }

    await redisServer.restart();
    // Well past the wait for in-flight publishes, the rebuild is still refused, saying why.
    const refusals: string[] = [];
    const until_ = Date.now() + PUBLISH_TIMEOUT_MS + 2_000 + 5_000;
    while (Date.now() < until_) {
      const outcome = await issue(heard, coupon.id, 'newcomer');
      expect(outcome).toMatchObject({ ok: false, reason: 'BACKEND_UNAVAILABLE' });
      refusals.push((outcome as Extract<Outcome, { ok: false }>).message);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(refusals.at(-1)).toMatch(/dead-letter topic .*coupon\.v1\.issue\.dlt/);
    await api.waitForLog('coupon.gate.rebuild_blocked', 5_000);
    expect(await r.exists(couponKeys(coupon.id).meta)).toBe(0);

    // An operator replays it; the replay tool marks it replayed.
    const replay = await run(process.execPath, ['src/bin/dlt-replay.ts'], env);
    expect(replay.code).toBe(0);
    expect(await unreplayed(topics.issue, coupon.id)).toBe(0);

    const newcomer = await issueUntilDecided(heard, coupon.id, 'newcomer');
    expect(newcomer.outcome).toMatchObject({ ok: true, seq: 4 });
    expect((await issueUntilDecided(heard, coupon.id, 'last')).outcome).toMatchObject({ ok: true, seq: 5 });
    expect((await issueUntilDecided(heard, coupon.id, 'too-late')).outcome).toMatchObject({ ok: false, reason: 'COUPON_SOLD_OUT' });
    await expectGateInvariants(coupon.id, 5, heard);
    expect((await ledger(coupon.id)).map((row) => [row.user_id, row.seq])).toEqual([['first', 1], ['second', 2], ['dead-lettered', 3], ['newcomer', 4], ['last', 5]]);
  });

  it('a redemption change sitting unreplayed in the dead-letter topic blocks the coupon\'s load until it is replayed', { timeout: 120_000 }, async () => {
    const heard = new Heard();
    const coupon = await createCoupon(client, 1);
    expect(await issue(heard, coupon.id, 'buyer')).toMatchObject({ ok: true });
    await until('ISSUED', async () => (await client.getUserCoupon({ couponId: coupon.id, userId: 'buyer' })).userCoupon!.state === UserCouponState.ISSUED);
    // A change of this coupon the ledger consumer could not apply, as the consumer records it.
    const deadLetter = { topic: topics.redemption, partition: 0, offset: Date.now(), coupon_id: coupon.id, reason: 'ATTEMPTS_EXHAUSTED' };
    await db('dead_letters').insert(deadLetter);

    await redisServer.restart();
    const refusals: string[] = [];
    const until_ = Date.now() + PUBLISH_TIMEOUT_MS + 2_000 + 3_000;
    while (Date.now() < until_) {
      const err = await client.redeemCoupon({ couponId: coupon.id, userId: 'buyer', orderId: 'order-1' }).then(() => undefined, failed);
      expect(err).toMatchObject({ ok: false, reason: 'BACKEND_UNAVAILABLE' });
      refusals.push((err as Extract<Outcome, { ok: false }>).message);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(refusals.at(-1)).toMatch(/dead-letter topic .*coupon\.v1\.redemption\.dlt/);
    await api.waitForLog('coupon.redemption.load_blocked', 5_000);

    // Replayed (what `npm run dlt:replay -- redemption` records once the change is back on its topic).
    await db('dead_letters').where({ topic: deadLetter.topic, partition: deadLetter.partition, offset: deadLetter.offset }).update({ replayed_at: new Date() });
    await until('the redemption', async () => (await client.redeemCoupon({ couponId: coupon.id, userId: 'buyer', orderId: 'order-1' }).then(() => true, () => false)), 30_000, 250);
    await waitForCaughtUp(k, redemptionGroups(env.KAFKA_REDEMPTION_GROUP).ledger, topics.redemption);
    await until('the ledger', async () => (await ledger(coupon.id))[0]?.order_id === 'order-1', 30_000);
  });
});
