// The consumer loop every project consumer shares: decode a batch, hand it to a plain function,
// retry by the one RetryPolicy, dead-letter what cannot be handled (with an alert), and only then
// commit. At-least-once delivery plus idempotent handlers gives exactly-once effects.
//
// Outages are not poison (retry-policy.ts): while a dependency is down, the batch is retried in
// place with capped backoff, heartbeating, without committing. kafkajs hands this consumer no other
// batch meanwhile (one partition at a time), so its partitions are in effect paused, and it
// resumes from where it was when the dependency is back. Nothing is dead-lettered for an outage.
//
// Dead-letter records keep the original key, value and headers, plus:
//   x-error, x-error-reason, x-attempts, x-first-failure-at, x-source-topic, x-source-partition, x-source-offset
import type { Consumer, Kafka, KafkaMessage, Producer } from 'kafkajs';
import type { Logger } from '../log.ts';
import type { Alerter } from './alert.ts';
import { EventDecodeError } from './errors.ts';
import { AttemptsExhausted, RetryAborted, withRetries, type RetryHooks, type RetryPolicy } from './retry-policy.ts';
import type { DeadLetterEntry } from '../store/dead-letters.ts';
import { traceBatch } from '../telemetry/messaging.ts';
import { FENCE_HEADER, isFence } from './fence.ts';

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
  /** Event name of the alert raised whenever records go to this consumer's dead-letter topic. */
  alertEvent: string;
  dltProducer: Producer;
  /** Records each dead letter (table dead_letters) before it is produced, so rebuilds know of it. */
  recordDeadLetters: (entries: DeadLetterEntry[]) => Promise<void>;
  /** True when record keys on this topic are coupon ids (kept with each dead letter). */
  keyIsCouponId: boolean;
  /**
   * What a decoded record asks for in the ledger (user, seq), kept with its dead letter so a rebuild
   * can tell one that can never own its seq (store/dead-letters.ts blockingDeadLetters).
   */
  claimOf?: (value: T) => { userId: string; seq: bigint };
  log: Logger;
  maxBytesPerPartition?: number;
  /**
   * Called for each fence record (events/fence.ts), in partition order: after every record before
   * it was handled, before any after it. Throwing retries it as an outage. Unset: fences are skipped.
   */
  onFence?: (fence: { key: string | null; marker: string; partition: number; offset: string }) => Promise<void>;
}

/** Ends a batch quietly when the consumer stopped or lost its partitions while retrying. */
const abortOn = (isRunning: () => boolean, isStale: () => boolean) => (err: unknown): undefined => {
  if (err instanceof RetryAborted || !isRunning() || isStale()) return undefined;
  throw err;
};

/** The most one dead-letter send carries (Kafka's default limit per request batch is 1 MiB). */
const DLT_SEND_BYTES = 512 * 1024;

const approxSize = (m: { key: Buffer | null; value: Buffer | null; headers: Record<string, unknown> }) => {
  let n = 64 + (m.key?.length ?? 0) + (m.value?.length ?? 0);
  for (const [k, v] of Object.entries(m.headers)) n += k.length + (typeof v === 'string' ? Buffer.byteLength(v) : Buffer.isBuffer(v) ? v.length : 16);
  return n;
};

/** Writing to the dead-letter topic (or recording it) failed: an outage (src/domain/outage.ts). */
export class DeadLetterWriteFailed extends Error {
  override name = 'DeadLetterWriteFailed';
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

  // The dead-letter topic and the ledger's record of it are dependencies like any other: a write
  // to them that fails is retried as an outage (alert once, nothing committed), whatever the error,
  // never answered by dead-lettering more records.
  const deadLetter = (rejections: Parameters<typeof writeDeadLetters>[0]) => writeDeadLetters(rejections).catch((err: unknown) => {
    throw new DeadLetterWriteFailed(`could not dead-letter ${rejections.length} record(s) to ${o.dltTopic}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  });
  const writeDeadLetters = async (rejections: { message: KafkaMessage; partition: number; reason: string; error: string; attempts: number; firstFailureAt: Date; value?: T }[]) => {
    await o.recordDeadLetters(rejections.map((r) => {
      const claim = r.value !== undefined ? o.claimOf?.(r.value) : undefined;
      return {
        topic: o.topic, partition: r.partition, offset: r.message.offset, reason: r.reason,
        couponId: o.keyIsCouponId ? (r.message.key?.toString() ?? null) : null,
        userId: claim?.userId ?? null, seq: claim?.seq ?? null,
      };
    }));
    const messages = rejections.map((r) => ({
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
      }));
    // In sends of at most DLT_SEND_BYTES: a whole exhausted batch (up to maxBytesPerPartition, plus
    // up to 2 KB of x-error per record) would be more than a topic takes in one request.
    for (let i = 0; i < messages.length;) {
      let bytes = 0;
      let j = i;
      while (j < messages.length && (j === i || bytes + approxSize(messages[j]!) <= DLT_SEND_BYTES)) bytes += approxSize(messages[j++]!);
      await o.dltProducer.send({ topic: o.dltTopic, acks: -1, messages: messages.slice(i, j) });
      i = j;
    }
  };

  const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
  await consumer.run({
    // Only offsets resolved by hand (after the handler's writes committed) are ever committed;
    // kafkajs commits them at the end of each batch or at commitOffsetsIfNecessary.
    eachBatchAutoResolve: false,
    // Each batch is one CONSUMER span linked to its records' traces (telemetry/messaging.ts).
    eachBatch: ({ batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, isRunning, isStale }) => batch.messages.length === 0 ? Promise.resolve() : traceBatch({ topic: o.topic, groupId: o.groupId, partition: batch.partition, messages: batch.messages }, async () => {
      const where = { topic: o.topic, partition: batch.partition, firstOffset: batch.messages[0]!.offset, lastOffset: batch.messages.at(-1)!.offset };
      const hooks: RetryHooks = {
        onFailure: async (err, attempt, delayMs, outage) => {
          o.log.warn({ ...where, records: batch.messages.length, attempt, delayMs, outage, err: (err as Error).message }, outage ? 'dependency unavailable; retrying the batch' : 'batch failed; retrying');
          await heartbeat().catch(() => undefined);
        },
        onOutage: (err, attempts) => o.alerter.outage({ ...where, attempts, error: (err as Error).message }),
        onRecovered: (attempts, outageMs) => o.alerter.recovered({ topic: o.topic, attempts, outageMs }),
        keepWaiting: async () => {
          await heartbeat().catch(() => undefined);
          return isRunning() && !isStale();
        },
      };
      // Everything below is retried by the policy: a registry outage while decoding, PostgreSQL,
      // Redis or Kafka down while handling or dead-lettering. Only the handler's own failures
      // count against its attempts.
      // The records between two fences are handled as one batch, and a fence is passed on
      // (onFence) only after every record before it was handled: what it stands for holds from
      // its place in the partition on. Without onFence, fences are skipped.
      const handleMessages = async (messages: KafkaMessage[]): Promise<boolean> => {
        const decoded = await withRetries(o.policy, async () => {
          const records: ConsumedRecord<T>[] = [];
          const poison: Parameters<typeof deadLetter>[0] = [];
          for (const message of messages) {
            // A rebuild's fence (events/fence.ts) is no event: skipped, and committed with the batch.
            if (isFence(message)) continue;
            try {
              if (!message.value) throw Object.assign(new Error('record has no value'), { reason: 'EMPTY_VALUE' });
              records.push({ value: await o.decoder.decode(message.value), key: message.key?.toString() ?? null, partition: batch.partition, offset: message.offset, message });
            } catch (err) {
              // Only a value that can never decode is poison; anything else (a registry outage) throws.
              if (!(err instanceof EventDecodeError) && (err as { reason?: string }).reason !== 'EMPTY_VALUE') throw err;
              const reason = (err as { reason?: string }).reason ?? 'DECODE_FAILED';
              poison.push({ message, partition: batch.partition, reason, error: (err as Error).message, attempts: 1, firstFailureAt: new Date() });
            }
          }
          return { records, poison };
        }, { ...hooks, onFailure: (err, attempt, delayMs) => hooks.onFailure(err, attempt, delayMs, true) }).catch(abortOn(isRunning, isStale));
        if (!decoded) return false;
        const { records, poison } = decoded;
        if (poison.length > 0) {
          const sent = await withRetries(o.policy, () => deadLetter(poison), hooks).catch(abortOn(isRunning, isStale));
          if (sent === undefined && (!isRunning() || isStale())) return false;
          await o.alerter.raise({ event: o.alertEvent, ...where, reason: poison[0]!.reason, records: poison.length, error: poison[0]!.error, attempts: 1 });
        }

        if (records.length > 0) {
          let rejected: Rejection<T>[] = [];
          try {
            rejected = (await withRetries(o.policy, () => o.handle(records, { heartbeat }), hooks))?.rejected ?? [];
          } catch (err) {
            if (err instanceof RetryAborted) return false;
            if (!(err instanceof AttemptsExhausted)) throw err;
            if (!isRunning() || isStale()) return false;
            const cause = (err.cause as Error)?.message ?? err.message;
            const sent = await withRetries(o.policy, () => deadLetter(records.map((r) => ({ message: r.message, partition: r.partition, reason: 'ATTEMPTS_EXHAUSTED', error: cause, attempts: err.attempts, firstFailureAt: err.firstFailureAt, value: r.value }))), hooks)
              .then(() => true, abortOn(isRunning, isStale));
            if (!sent) return false;
            await o.alerter.raise({ event: o.alertEvent, ...where, reason: 'ATTEMPTS_EXHAUSTED', records: records.length, error: cause, attempts: err.attempts });
          }
          // Only the records the handler rejected; the rest of the batch is handled and stays so.
          if (rejected.length > 0) {
            const sent = await withRetries(o.policy, () => deadLetter(rejected.map((r) => ({ message: r.record.message, partition: r.record.partition, reason: r.reason, error: r.error, attempts: 1, firstFailureAt: new Date(), value: r.record.value }))), hooks)
              .then(() => true, abortOn(isRunning, isStale));
            if (!sent) return false;
            await o.alerter.raise({ event: o.alertEvent, ...where, reason: rejected[0]!.reason, records: rejected.length, error: rejected[0]!.error, attempts: 1 });
          }
        }
        return true;
      };
      let segment: KafkaMessage[] = [];
      for (const message of batch.messages) {
        if (!o.onFence || !isFence(message)) { segment.push(message); continue; }
        if (segment.length > 0) {
          if (!(await handleMessages(segment))) return;
          resolveOffset(segment.at(-1)!.offset);
        }
        segment = [];
        const fence = { key: message.key?.toString() ?? null, marker: message.headers![FENCE_HEADER]!.toString(), partition: batch.partition, offset: message.offset };
        const passed = await withRetries(o.policy, () => o.onFence!(fence), hooks).then(() => true, abortOn(isRunning, isStale));
        if (!passed) return;
        resolveOffset(message.offset);
      }
      if (segment.length > 0 && !(await handleMessages(segment))) return;
      if (!isRunning() || isStale()) return;
      resolveOffset(batch.messages.at(-1)!.offset);
      await commitOffsetsIfNecessary();
    }),
  });
  await joined;
  return { consumer, stop: () => consumer.disconnect() };
}
