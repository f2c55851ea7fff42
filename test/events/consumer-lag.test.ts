// A rebuild after a Redis loss waits for the ledger's consumer to have committed the coupon's
// records, and only those: the topics are keyed by coupon id, so one partition holds them, and a
// backlog in another partition (another coupon's sale) must not keep this coupon unavailable.
// Against the real broker: a topic of 3 partitions, a group that has committed one coupon's
// partition and not another's.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Admin, Producer } from 'kafkajs';
import { consumerCaughtUp } from '../../src/events/consumer-lag.ts';
import { ensureTopics, partitionOfKey } from '../../src/events/topics.ts';
import { kafka } from '../support/stack.ts';

const topic = `test.consumer-lag.${randomUUID()}`;
const groupId = `test-consumer-lag-${randomUUID()}`;
const PARTITIONS = 3;
const k = kafka();
let admin: Admin;
let producer: Producer;

beforeAll(async () => {
  admin = k.admin();
  await admin.connect();
  await ensureTopics(admin, { partitions: PARTITIONS, replicationFactor: 1 }, [topic]);
  producer = k.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
});
afterAll(async () => {
  await producer?.disconnect();
  await admin?.deleteGroups([groupId]).catch(() => undefined);
  await admin?.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin?.disconnect();
});

describe('waiting for the consumer that writes the ledger', () => {
  it('waits only for the partition the coupon\'s records go to, the one the producer put them in', async () => {
    // Two coupons whose records go to different partitions.
    const caughtUpCoupon = randomUUID();
    let laggingCoupon = randomUUID();
    while (partitionOfKey(topic, laggingCoupon, PARTITIONS) === partitionOfKey(topic, caughtUpCoupon, PARTITIONS)) laggingCoupon = randomUUID();

    const send = async (key: string, count: number) => {
      const [meta] = await producer.send({ topic, acks: -1, messages: Array.from({ length: count }, () => ({ key, value: 'record' })) });
      return meta!.partition;
    };
    // The producer puts each coupon's records where partitionOfKey says.
    expect(await send(caughtUpCoupon, 2)).toBe(partitionOfKey(topic, caughtUpCoupon, PARTITIONS));
    expect(await send(laggingCoupon, 1)).toBe(partitionOfKey(topic, laggingCoupon, PARTITIONS));
    const ends = await admin.fetchTopicOffsets(topic);
    const endOf = (key: string) => ends.find((e) => e.partition === partitionOfKey(topic, key, PARTITIONS))!;
    expect(Number(endOf(caughtUpCoupon).high)).toBe(2);
    expect(Number(endOf(laggingCoupon).high)).toBe(1);

    // The group has taken the first coupon's partition and nothing of the other.
    await admin.setOffsets({ groupId, topic, partitions: [{ partition: endOf(caughtUpCoupon).partition, offset: endOf(caughtUpCoupon).high }] });

    const caughtUp = consumerCaughtUp(admin, groupId, topic, 200);
    expect(await caughtUp(caughtUpCoupon)).toBe(true);
    expect(await caughtUp(laggingCoupon)).toBe(false);
  });
});
