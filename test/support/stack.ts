// Direct access to the real stack for assertions on stored state: PostgreSQL, Redis and Kafka.
import { randomUUID } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { loadConfig } from '../../src/config.ts';
import { createDb } from '../../src/store/db.ts';
import { createKafka } from '../../src/events/kafka.ts';
import { isFence } from '../../src/events/fence.ts';
import { createLogger } from '../../src/log.ts';
import { Redis } from 'ioredis';

export const config = loadConfig();
export const testLog = createLogger('test', 'warn');
export const db = () => createDb(config.DATABASE_URL, 4);
export const redis = () => new Redis(config.REDIS_URL);
export const kafka = (brokers = config.KAFKA_BROKERS): Kafka => createKafka(brokers, `test-${randomUUID().slice(0, 8)}`, testLog);

/**
 * Every event on `topic` from the beginning up to the current end, read with a throwaway group.
 * A rebuild's fence records (src/events/fence.ts) are no events and are left out unless `fences`.
 */
export async function readTopic(k: Kafka, topic: string, filter: (key: string | null) => boolean = () => true, fences = false): Promise<{ key: string | null; value: Buffer; headers: Record<string, string>; partition: number; offset: string }[]> {
  const admin = k.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const remaining = new Map(ends.filter((e) => Number(e.high) > Number(e.low)).map((e) => [e.partition, Number(e.high)]));
  const out: { key: string | null; value: Buffer; headers: Record<string, string>; partition: number; offset: string }[] = [];
  if (remaining.size === 0) return out;
  const consumer = k.consumer({ groupId: `test-reader-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out reading ${topic}`)), 60_000);
    consumer.run({
      // eslint-disable-next-line @typescript-eslint/require-await -- kafkajs expects a promise
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const key = m.key?.toString() ?? null;
          if (filter(key) && (fences || !isFence(m))) {
            const headers = Object.fromEntries(Object.entries(m.headers ?? {}).map(([h, v]) => [h, v?.toString() ?? '']));
            out.push({ key, value: m.value ?? Buffer.alloc(0), headers, partition: batch.partition, offset: m.offset });
          }
        }
        const last = batch.messages.at(-1);
        if (last && Number(last.offset) + 1 >= (remaining.get(batch.partition) ?? 0)) remaining.delete(batch.partition);
        if (remaining.size === 0) { clearTimeout(timer); resolve(); }
      },
    }).catch(reject);
  });
  await consumer.disconnect();
  return out;
}

export async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) { last = err; }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** Resolves when `groupId` has committed every record now on `topic` (its lag is zero). */
export async function waitForCaughtUp(k: Kafka, groupId: string, topic: string, timeoutMs = 60_000): Promise<void> {
  let admin = k.admin();
  await admin.connect();
  try {
    let ends: Awaited<ReturnType<typeof admin.fetchTopicOffsets>> | undefined;
    await until(`${groupId} to catch up on ${topic}`, async () => {
      try {
        ends ??= await admin.fetchTopicOffsets(topic);
        const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
        return ends.every((e) => {
          const c = committed?.partitions.find((p) => p.partition === e.partition);
          return Number(e.high) === Number(e.low) || Number(c?.offset ?? -1) >= Number(e.high);
        });
      } catch (err) {
        // A partition's leader moved (a broker of the cluster proof restarted): kafkajs's admin gives
        // up on NOT_LEADER without reading the metadata again, so the next try uses a new client.
        if ((err as { retriable?: boolean }).retriable !== true) throw err;
        await admin.disconnect().catch(() => undefined);
        admin = k.admin();
        await admin.connect();
        return false;
      }
    }, timeoutMs);
  } finally {
    await admin.disconnect();
  }
}

export const uniqueEnv = (name: string) => {
  const id = `${name}-${randomUUID().slice(0, 8)}`;
  return { KAFKA_TOPIC_PREFIX: `${id}.`, KAFKA_ISSUER_GROUP: `issuer-${id}`, KAFKA_REDEMPTION_GROUP: `redemption-${id}`, KAFKA_CLIENT_ID: id };
};

/** Subjects created by a test file, deleted (soft, then permanently) when `cleanup` runs. */
export function registrySubjects(registryUrl = config.SCHEMA_REGISTRY_URL) {
  const subjects: string[] = [];
  return {
    /** A fresh topic name under `stem`; its `<topic>-value` subject is removed at cleanup. */
    uniqueTopic(stem: string): string {
      const topic = `${stem}.${randomUUID().slice(0, 8)}`;
      subjects.push(`${topic}-value`);
      return topic;
    },
    async cleanup(): Promise<void> {
      for (const subject of subjects) {
        await fetch(`${registryUrl}/subjects/${subject}`, { method: 'DELETE' });
        await fetch(`${registryUrl}/subjects/${subject}?permanent=true`, { method: 'DELETE' });
      }
    },
  };
}

/** Removes a test file's environment: its topics, and the registry subjects of the topics the services produce to. */
export async function dropEnvironment(k: Kafka, topics: Record<string, string> & { issue: string; redemption: string; issued?: string }): Promise<void> {
  const admin = k.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => undefined);
  await admin.disconnect();
  for (const topic of [topics.issue, topics.redemption, topics.issued].filter((t) => t !== undefined)) {
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value`, { method: 'DELETE' }).catch(() => undefined);
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value?permanent=true`, { method: 'DELETE' }).catch(() => undefined);
  }
}
