// kafka_consumergroup_lag, the way Kafka exporters compute it: per partition, the topic's high
// watermark minus the group's committed offset (or minus the low watermark while the group has
// committed nothing). It is read from the broker at each scrape rather than from the consumer's
// own batches, so it keeps growing while a consumer is stuck retrying through an outage, which is
// when it matters. A group that never ran, such as a dead-letter topic's replay group, shows what
// waits on its topic.
import type { Admin } from 'kafkajs';
import type { Logger } from '../log.ts';
import { gauge } from './registry.ts';

/** Called at every scrape to refresh kafka_consumergroup_lag (see exportConsumerLag). */
const lagCollectors = new Set<() => Promise<void>>();

const consumerGroupLag = gauge({
  name: 'kafka_consumergroup_lag',
  help: "Records on a partition that the consumer group has not committed yet (high watermark - committed offset).",
  labelNames: ['consumergroup', 'topic', 'partition'],
  aggregator: 'max',
  async collect() { await Promise.all([...lagCollectors].map((collect) => collect())); },
});

export interface LagTarget { groupId: string; topic: string }

/** Partition lags of `groupId` on `topic`, from the broker. */
export async function fetchLag(admin: Admin, { groupId, topic }: LagTarget): Promise<{ partition: number; lag: number }[]> {
  const [ends, [committed]] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
  return ends.map((end) => {
    const offset = Number(committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
    return { partition: end.partition, lag: Math.max(0, Number(end.high) - (offset >= 0 ? offset : Number(end.low))) };
  });
}

/**
 * Exports the lag of each target at every scrape. A scrape that cannot reach Kafka within
 * `timeoutMs` keeps the last values (coupon_dependency_up{dependency="kafka"} says why).
 */
export function exportConsumerLag(admin: Admin, targets: LagTarget[], log: Logger, timeoutMs = 2_000): { stop(): void } {
  const collect = async () => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const lags = await Promise.race([
        Promise.all(targets.map(async (t) => ({ ...t, partitions: await fetchLag(admin, t) }))),
        new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer from Kafka in ${timeoutMs} ms`)), timeoutMs); }),
      ]);
      for (const { groupId, topic, partitions } of lags) {
        for (const { partition, lag } of partitions) consumerGroupLag.set({ consumergroup: groupId, topic, partition: String(partition) }, lag);
      }
    } catch (err) {
      log.debug({ err: (err as Error).message }, 'consumer lag not refreshed');
    } finally {
      clearTimeout(timer);
    }
  };
  lagCollectors.add(collect);
  return { stop: () => { lagCollectors.delete(collect); } };
}
