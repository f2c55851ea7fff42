// The batching publishers' metrics (events/publisher.ts), in coupon-api and coupon-issuer alike.
import { gauge, histogram } from './registry.ts';

export const publishSeconds = histogram({
  name: 'coupon_publish_seconds',
  help: 'Time from queueing a record to the broker acknowledging it (outcome="ok") or the publish failing (outcome="failed").',
  labelNames: ['outcome'],
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
});
for (const outcome of ['ok', 'failed']) publishSeconds.zero({ outcome });

/** Anything with a queue of records waiting to be sent (events/publisher.ts). */
interface Queue { readonly queueDepth: number }
const queues = new Set<WeakRef<Queue>>();
const watched = new WeakSet<Queue>();

export const publishQueueDepth = gauge({
  name: 'coupon_publish_queue_depth',
  help: 'Records queued in the batching publishers, not yet handed to Kafka.',
  aggregator: 'sum',
  collect() {
    let depth = 0;
    for (const ref of queues) {
      const queue = ref.deref();
      if (queue) depth += queue.queueDepth; else queues.delete(ref);
    }
    this.set(depth);
  },
});

/** Times one record's publish and counts its publisher's queue in coupon_publish_queue_depth. */
export function observePublish(publisher: Queue, sent: Promise<void>): void {
  if (!watched.has(publisher)) { watched.add(publisher); queues.add(new WeakRef(publisher)); }
  const end = publishSeconds.startTimer();
  sent.then(() => end({ outcome: 'ok' }), () => end({ outcome: 'failed' }));
}
