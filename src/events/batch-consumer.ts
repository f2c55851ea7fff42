// The consumer loop every project consumer shares: decode a batch, hand it to a plain function,
// retry by the one RetryPolicy, dead-letter what cannot be handled (with an alert), and only then
// commit. At-least-once delivery plus idempotent handlers gives exactly-once effects.
//
// Dead-letter records keep the original key, value and headers, plus:
//   x-error, x-error-reason, x-attempts, x-first-failure-at, x-source-topic, x-source-partition, x-source-offset
import type { Consumer, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Logger } from '../log.ts';
import type { Alerter } from './alert.ts';
import { EventDecodeError } from './errors.ts';
import { AttemptsExhausted, withRetries, type RetryPolicy } from './retry-policy.ts';

export interface ConsumedRecord<T> {
  value: T;
  key: string | null;
  partition: number;
  offset: string;
  message: KafkaMessage;
}

export interface Rejection<T> { record: ConsumedRecord<T>; reason: string; error: string }

/** Handles a whole batch; throwing retries it. Records it cannot ever handle are returned as rejected. */
export type BatchHandler<T> = (records: ConsumedRecord<T>[], ctx: { heartbeat(): Promise<void> }) => Promise<{ rejected?: Rejection<T>[] } | void>;

export interface Decoder<T> { decode(bytes: Uint8Array): Promise<T> }

export interface BatchConsumerOptions<T> {
  kafka: Kafka;
  groupId: string;
  topic: string;
  dltTopic: string;
  decoder: Decoder<T>;
  handle: BatchHandler<T>;
  policy: RetryPolicy;
  alerter: Alerter;
  /** Event name of the alert raised when a batch is dead-lettered. */
  alertEvent: string;
  dltProducer: Producer;
  log: Logger;
  maxBytesPerPartition?: number;
}

export interface RunningConsumer { consumer: Consumer; stop(): Promise<void> }

export async function startBatchConsumer<T>(o: BatchConsumerOptions<T>): Promise<RunningConsumer> {
  const consumer = o.kafka.consumer({
    groupId: o.groupId,
    maxBytesPerPartition: o.maxBytesPerPartition ?? 4 * 1024 * 1024,
    maxWaitTimeInMs: 100,
    // A crashed member's partitions move to the others after this long.
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
    retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 5_000 },
  });
  await consumer.connect();
  await consumer.subscribe({ topic: o.topic, fromBeginning: true });

  const deadLetter = async (rejections: { message: KafkaMessage; partition: number; reason: string; error: string; attempts: number; firstFailureAt: Date }[]) => {
    await o.dltProducer.send({
      topic: o.dltTopic,
      acks: -1,
      messages: rejections.map((r) => ({
        key: r.message.key,
        value: r.message.value,
        headers: {
          ...(r.message.headers),
          'x-error': r.error.slice(0, 2000),
          'x-error-reason': r.reason,
          'x-attempts': String(r.attempts),
          'x-first-failure-at': r.firstFailureAt.toISOString(),
          'x-source-topic': o.topic,
          'x-source-partition': String(r.partition),
          'x-source-offset': r.message.offset,
        },
      })),
    });
  };

  const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
  await consumer.run({
    // Only offsets resolved by hand (after the handler's writes committed) are ever committed;
    // kafkajs commits them at the end of each batch or at commitOffsetsIfNecessary.
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, isRunning, isStale }) => {
      if (batch.messages.length === 0) return;
      const records: ConsumedRecord<T>[] = [];
      const poison: Parameters<typeof deadLetter>[0] = [];
      for (const message of batch.messages) {
        try {
          if (!message.value) throw Object.assign(new Error('record has no value'), { reason: 'EMPTY_VALUE' });
          records.push({ value: await o.decoder.decode(message.value), key: message.key?.toString() ?? null, partition: batch.partition, offset: message.offset, message });
        } catch (err) {
          // Only a value that can never decode is poison. A registry outage (SchemaRegistryError)
          // propagates: kafkajs re-runs the batch from the last committed offset.
          if (!(err instanceof EventDecodeError) && (err as { reason?: string }).reason !== 'EMPTY_VALUE') throw err;
          const reason = (err as { reason?: string }).reason ?? 'DECODE_FAILED';
          poison.push({ message, partition: batch.partition, reason, error: (err as Error).message, attempts: 1, firstFailureAt: new Date() });
        }
      }
      if (poison.length > 0) {
        await deadLetter(poison);
        await o.alerter.raise({ event: 'coupon.record.undecodable', topic: o.topic, reason: poison[0]!.reason, records: poison.length, error: poison[0]!.error, attempts: 1 });
      }

      if (records.length > 0) {
        try {
          const result = await withRetries(o.policy, () => o.handle(records, { heartbeat }), async (err, attempt, delayMs) => {
            o.log.warn({ topic: o.topic, partition: batch.partition, records: records.length, attempt, delayMs, err: (err as Error).message }, 'batch failed; retrying');
            await heartbeat().catch(() => undefined);
          });
          const rejected = result?.rejected ?? [];
          if (rejected.length > 0) {
            await deadLetter(rejected.map((r) => ({ message: r.record.message, partition: r.record.partition, reason: r.reason, error: r.error, attempts: 1, firstFailureAt: new Date() })));
            await o.alerter.raise({ event: 'coupon.record.rejected', topic: o.topic, reason: rejected[0]!.reason, records: rejected.length, error: rejected[0]!.error, attempts: 1 });
          }
        } catch (err) {
          if (!(err instanceof AttemptsExhausted)) throw err;
          if (!isRunning() || isStale()) return;
          await deadLetter(records.map((r) => ({ message: r.message, partition: r.partition, reason: 'ATTEMPTS_EXHAUSTED', error: (err.cause as Error)?.message ?? err.message, attempts: err.attempts, firstFailureAt: err.firstFailureAt })));
          await o.alerter.raise({
            event: o.alertEvent, topic: o.topic, reason: 'ATTEMPTS_EXHAUSTED', records: records.length,
            error: (err.cause as Error)?.message ?? err.message, attempts: err.attempts,
            partition: batch.partition, firstOffset: records[0]!.offset, lastOffset: records.at(-1)!.offset,
          });
        }
      }
      if (!isRunning() || isStale()) return;
      resolveOffset(batch.messages.at(-1)!.offset);
      await commitOffsetsIfNecessary();
    },
  });
  await joined;
  return { consumer, stop: () => consumer.disconnect() };
}
