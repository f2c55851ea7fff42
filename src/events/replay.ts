// Puts dead-lettered records back on their source topic once the cause is fixed. Progress is kept
// in a consumer group, so a replay never sends a record twice; and since every consumer is
// idempotent, even a record replayed twice (say, after a crash mid-replay) is issued once.
import { randomUUID } from 'node:crypto';
import type { IHeaders, Kafka } from 'kafkajs';
import type { Logger } from '../log.ts';
import { deadLetterId } from '../store/dead-letters.ts';
import { canonicalCouponId } from '../domain/ids.ts';

/** The header a replayed record carries: where in the dead-letter topic it came from. */
export const REPLAYED_HEADER = 'x-replayed-from';

const canonicalKey = (key: Buffer | null): Buffer | null => {
  const id = key && canonicalCouponId(key.toString());
  return id ? Buffer.from(id) : key;
};

/** The consumer group `npm run dlt:replay` keeps its place in; its lag on a dead-letter topic is what waits to be replayed. */
export const replayGroupId = (clientId: string, dltTopic: string) => `${clientId}-dlt-replay-${dltTopic}`;

export interface ReplayResult { replayed: number; byTopic: Record<string, number>; skippedDiscarded: number }

export interface ReplayedSource { topic: string; partition: number; offset: string }

export async function replayDeadLetters(kafka: Kafka, opts: {
  dltTopic: string; fallbackTopic: string; groupId: string; log: Logger;
  /**
   * The source topic is keyed by coupon id (issue, redemption): a record an older producer keyed
   * with another spelling of the UUID goes back under the canonical one, so it lands on the
   * coupon's own partition, behind the coupon's other records.
   */
  keyIsCouponId?: boolean;
  /** Called with the source positions of each replayed batch, after the broker acknowledged it. */
  onReplayed?: (sources: ReplayedSource[]) => Promise<void>;
  /**
   * Which of these source positions an operator discarded (ids "<topic>/<partition>/<offset>",
   * `npm run dlt:discard`): they stay on the dead-letter topic and are passed over. Replayed, they
   * could only be dead-lettered again under a new offset, blocking their coupon's rebuild anew.
   */
  discarded?: (sources: ReplayedSource[]) => Promise<Set<string>>;
}): Promise<ReplayResult> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(opts.dltTopic);
  const committed = await admin.fetchOffsets({ groupId: opts.groupId, topics: [opts.dltTopic] });
  await admin.disconnect();
  const start = new Map(committed[0]?.partitions.map((p) => [p.partition, Number(p.offset)]) ?? []);
  // Partitions with something left to replay, and where their end is now.
  const todo = new Map(ends.filter((e) => Number(e.high) > Math.max(Number(e.low), start.get(e.partition) ?? -1)).map((e) => [e.partition, Number(e.high)]));
  const result: ReplayResult = { replayed: 0, byTopic: {}, skippedDiscarded: 0 };
  if (todo.size === 0) return result;

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  const consumer = kafka.consumer({ groupId: opts.groupId, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic: opts.dltTopic, fromBeginning: true });
  const runId = randomUUID();
  await new Promise<void>((resolve, reject) => {
    consumer.run({
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, commitOffsetsIfNecessary }) => {
        const end = todo.get(batch.partition);
        const due = batch.messages.filter((m) => end !== undefined && Number(m.offset) < end);
        const sourceOf = (m: (typeof due)[number]) => {
          const h = m.headers ?? {};
          const [topic, partition, offset] = ['x-source-topic', 'x-source-partition', 'x-source-offset'].map((k) => h[k]?.toString());
          return topic && partition !== undefined && offset !== undefined ? { topic, partition: Number(partition), offset } : undefined;
        };
        const discarded = opts.discarded ? await opts.discarded(due.flatMap((m) => sourceOf(m) ?? [])) : new Set<string>();
        const messages = due.filter((m) => {
          const source = sourceOf(m);
          return !(source && discarded.has(deadLetterId(source)));
        });
        result.skippedDiscarded += due.length - messages.length;
        if (messages.length > 0) {
          const byTopic = new Map<string, { key: Buffer | null; value: Buffer | null; headers: IHeaders }[]>();
          const sources: ReplayedSource[] = [];
          for (const m of messages) {
            const headers = { ...(m.headers ?? {}) };
            const target = headers['x-source-topic']?.toString() || opts.fallbackTopic;
            const partition = headers['x-source-partition']?.toString();
            const offset = headers['x-source-offset']?.toString();
            if (partition !== undefined && offset !== undefined) sources.push({ topic: target, partition: Number(partition), offset });
            for (const h of Object.keys(headers)) if (h.startsWith('x-')) delete headers[h];
            headers[REPLAYED_HEADER] = `${opts.dltTopic}/${batch.partition}/${m.offset}`;
            headers['x-replay-run'] = runId;
            const list = byTopic.get(target) ?? [];
            list.push({ key: opts.keyIsCouponId ? canonicalKey(m.key) : m.key, value: m.value, headers });
            byTopic.set(target, list);
          }
          await producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, msgs]) => ({ topic, messages: msgs })) });
          await opts.onReplayed?.(sources);
          for (const [topic, msgs] of byTopic) result.byTopic[topic] = (result.byTopic[topic] ?? 0) + msgs.length;
          result.replayed += messages.length;
        }
        // Discarded records are passed for good: the group moves past them too.
        if (due.length > 0) {
          resolveOffset(due.at(-1)!.offset);
          await commitOffsetsIfNecessary();
        }
        const last = batch.messages.at(-1);
        if (end === undefined || (last && Number(last.offset) + 1 >= end)) todo.delete(batch.partition);
        if (todo.size === 0) resolve();
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  await producer.disconnect();
  opts.log.info(result, 'dead-letter replay finished');
  return result;
}
