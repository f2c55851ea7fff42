// Whether a consumer group has committed everything now on a topic. State that is rebuilt from the
// ledger (the gate after Redis lost it, redemption state likewise) may only be rebuilt once the
// consumer that writes the ledger has caught up, or records still in flight would be missing.
import type { Admin } from 'kafkajs';

/**
 * True once `groupId` has committed every record that was on `topic` when asked, waiting up to
 * `waitMs` for it to get there (a healthy consumer lags by one batch or so).
 */
export function consumerCaughtUp(admin: Admin, groupId: string, topic: string, waitMs: number): () => Promise<boolean> {
  return async () => {
    const ends = await admin.fetchTopicOffsets(topic);
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

