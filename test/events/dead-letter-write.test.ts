// A dead-letter topic that cannot take a rejected record (here: the broker refuses it as too large,
// MESSAGE_TOO_LARGE, a refusal Kafka calls final) must not turn the batch's good records into dead
// letters. The consumer waits, alerts once, commits nothing, and once the topic takes the record it
// dead-letters exactly the rejected one and moves on. Real broker and PostgreSQL; the consumer loop
// is the one every project consumer runs (src/events/batch-consumer.ts) with a handler of its own.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Alerter } from '../../src/events/alert.ts';
import { startBatchConsumer, type RunningConsumer } from '../../src/events/batch-consumer.ts';
import { recordDeadLetters, type DeadLetterEntry } from '../../src/store/dead-letters.ts';
import { migrate } from '../../src/store/db.ts';
import { db as newDb, kafka, readTopic, until } from '../support/stack.ts';

const db = newDb();
const k = kafka();
const prefix = `dlw-${randomUUID().slice(0, 8)}`;
const topic = `${prefix}.events`;
const dltTopic = `${prefix}.events.dlt`;
const groupId = `${prefix}-group`;
const logs: Record<string, unknown>[] = [];
const log = pino({ level: 'info' }, new Writable({ write(chunk: Buffer, _enc, done) { logs.push(JSON.parse(chunk.toString()) as Record<string, unknown>); done(); } }));
let running: RunningConsumer | undefined;
const producer = k.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
const dltProducer = k.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
const admin = k.admin();
// What both consumers below share: the records are plain strings, few attempts, short backoff.
const common = () => ({
  kafka: k, dltProducer, log,
  decoder: { decode: (bytes: Uint8Array) => Promise.resolve(Buffer.from(bytes).toString()) },
  policy: { maxAttempts: 3, backoffMs: 50, maxBackoffMs: 200 },
  alerter: new Alerter(log, undefined),
  recordDeadLetters: (entries: DeadLetterEntry[]) => recordDeadLetters(db, entries),
});

beforeAll(async () => {
  await migrate(db);
  await Promise.all([admin.connect(), producer.connect(), dltProducer.connect()]);
});

afterAll(async () => {
  await running?.stop();
  await Promise.allSettled([producer.disconnect(), dltProducer.disconnect()]);
  await admin.deleteTopics({ topics: [topic, dltTopic] }).catch(() => undefined);
  await admin.disconnect();
  await db('dead_letters').where({ topic }).delete();
  await db.destroy();
});

describe('a dead-letter topic that refuses the rejected record', () => {
  it('holds the batch (an alert, no commit, no good record dead-lettered) until the topic takes it, then dead-letters only that record', { timeout: 60_000 }, async () => {
    // The dead-letter record carries the original value and seven x-* headers: far more than 200 bytes.
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 1 }, { topic: dltTopic, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: '200' }] }] });
    await producer.send({ topic, acks: -1, messages: ['good-1', 'bad', 'good-2'].map((value) => ({ key: 'k', value })) });

    const handled: string[] = [];
    running = await startBatchConsumer<string>({
      ...common(), groupId, topic, dltTopic, alertEvent: 'test.dead_lettered', keyIsCouponId: false,
      handle: (records) => {
        handled.push(...records.map((r) => r.value));
        return Promise.resolve({ rejected: records.filter((r) => r.value === 'bad').map((record) => ({ record, reason: 'TEST_POISON', error: 'the test refuses it' })) });
      },
    });

    // Far longer than 3 attempts at 50–200 ms take.
    await until('the outage alert', () => Promise.resolve(logs.some((l) => l.msg === 'coupon.dependency.outage')), 20_000);
    await new Promise((r) => setTimeout(r, 2_000));
    const recorded = async () => (await db('dead_letters').where({ topic }).orderBy('offset').select<{ offset: string; reason: string }[]>('offset', 'reason')).map((r) => `${r.offset}:${r.reason}`);
    expect(await recorded()).toEqual(['1:TEST_POISON']);
    expect(logs.filter((l) => l.msg === 'test.dead_lettered')).toEqual([]);
    const committed = async () => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0]!.partitions[0]!.offset;
    expect(await committed()).toBe('-1');
    expect(logs.filter((l) => l.msg === 'coupon.dependency.outage')).toHaveLength(1);

    // The operator raises the limit: the rejected record goes to the dead-letter topic, and only it.
    await admin.alterConfigs({ validateOnly: false, resources: [{ type: 2, name: dltTopic, configEntries: [{ name: 'max.message.bytes', value: '1048588' }] }] });
    await until('the batch committed', async () => (await committed()) === '3', 30_000);
    const dlt = await readTopic(k, dltTopic);
    expect(dlt.map((m) => [m.value.toString(), m.headers['x-error-reason'], m.headers['x-source-offset']])).toEqual([['bad', 'TEST_POISON', '1']]);
    expect(await recorded()).toEqual(['1:TEST_POISON']);
    expect(logs.filter((l) => l.msg === 'test.dead_lettered').map((l) => l.reason)).toEqual(['TEST_POISON']);
    expect(logs.some((l) => l.msg === 'coupon.dependency.recovered')).toBe(true);
    // The good records were handled (at least once), never dead-lettered.
    expect(new Set(handled)).toEqual(new Set(['good-1', 'bad', 'good-2']));
  });

  it('a batch of 20,000 rejected records (more than one statement or one Kafka request takes) is recorded and dead-lettered whole', { timeout: 90_000 }, async () => {
    const bigTopic = `${prefix}.big`;
    const bigDlt = `${prefix}.big.dlt`;
    const bigGroup = `${prefix}-big`;
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic: bigTopic, numPartitions: 1 }, { topic: bigDlt, numPartitions: 1 }] });
    // One send: one record batch, which the consumer gets as one batch. Keys as a producer might
    // send them, one with a NUL (PostgreSQL text cannot hold it).
    await producer.send({ topic: bigTopic, acks: -1, messages: Array.from({ length: 20_000 }, (_, i) => ({ key: i === 7 ? 'k\u00007' : `k${i}`, value: `poison-${i}` })) });
    const bigRun = await startBatchConsumer<string>({
      ...common(), groupId: bigGroup, topic: bigTopic, dltTopic: bigDlt, alertEvent: 'test.big.dead_lettered', keyIsCouponId: true,
      handle: (records) => Promise.resolve({ rejected: records.map((record) => ({ record, reason: 'TEST_POISON', error: 'x'.repeat(2_000) })) }),
    });
    try {
      const committed = async () => (await admin.fetchOffsets({ groupId: bigGroup, topics: [bigTopic] }))[0]!.partitions[0]!.offset;
      await until('every record dead-lettered and committed', async () => (await committed()) === '20000', 60_000);
      const [row] = await db('dead_letters').where({ topic: bigTopic, reason: 'TEST_POISON' }).count<{ count: string }[]>('* as count');
      expect(Number(row!.count)).toBe(20_000);
      expect((await db('dead_letters').where({ topic: bigTopic, offset: '7' }).first<{ coupon_id: string }>())?.coupon_id).toBe('k7');
      expect((await readTopic(k, bigDlt)).length).toBe(20_000);
      expect(logs.filter((l) => l.msg === 'coupon.dependency.outage' && l.topic === bigTopic)).toEqual([]);
    } finally {
      await bigRun.stop();
      await admin.deleteTopics({ topics: [bigTopic, bigDlt] }).catch(() => undefined);
      await db('dead_letters').where({ topic: bigTopic }).delete();
    }
  });
});
