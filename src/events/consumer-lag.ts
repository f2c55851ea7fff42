// Whether a consumer group has committed everything now on a topic. State that is rebuilt from the
// ledger (the gate after Redis lost it, redemption state likewise) may only be rebuilt once the
// consumer that writes the ledger has caught up, or records still in flight would be missing.
// Only the partition the state's records go to is awaited: the topics are keyed by coupon id, so a
// coupon's records are all in one partition, and a backlog in another partition (another coupon's
// busy sale, a stuck record) must not hold this coupon's rebuild.
import type { Admin } from 'kafkajs';
import { partitionOfKey } from './topics.ts';

/**
 * True once `groupId` has committed every record that was, when asked, in the partition of `topic`
 * that records keyed `key` go to, waiting up to `waitMs` for it to get there (a healthy consumer
 * lags by one batch or so).
 */
export function consumerCaughtUp(admin: Admin, groupId: string, topic: string, waitMs: number): (key: string) => Promise<boolean> {
  return async (key) => {
    const all = await admin.fetchTopicOffsets(topic);
    const partition = partitionOfKey(topic, key, all.length);
    const ends = all.filter((end) => end.partition === partition);
    const deadline = Date.now() + waitMs;
    for (;;) {
      const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
      const done = ends.every((end) => {
        const c = committed?.partitions.find((p) => p.partition === end.partition);
        return Number(end.high) === Number(end.low) || Number(c?.offset ?? -1) >= Number(end.high);
      });
      if (done) return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
}

