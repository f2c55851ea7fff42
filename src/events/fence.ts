// Fence records (docs/decisions/0010-rebuild-only-from-settled-facts.md): before a rebuild after a
// Redis loss trusts "the consumer has committed everything in the coupon's partition", coupon-api
// appends a fence record to that partition and waits for its acknowledgement (acks=all). Kafka
// acknowledges it only once every in-sync replica holds it, so the partition's end offset read after
// that lies past every record acknowledged before it, even right after a leader failover whose new
// leader at first reports an older high watermark. The consumers skip fence records.
import type { KafkaMessage, Message } from 'kafkajs';
import type { BatchingPublisher } from './publisher.ts';

/** The header that marks a fence record; its value is the loss marker the rebuild waits on. */
export const FENCE_HEADER = 'coupon-fence';

/** True for a fence record: consumers skip it (it is no event). */
export const isFence = (message: Pick<KafkaMessage, 'headers'>): boolean => message.headers?.[FENCE_HEADER] !== undefined;

// Fences this process has written, per coupon and loss; a loss needs one per process at most.
const REMEMBERED = 10_000;

/**
 * Writes the fence of one loss of `couponId`'s state on `topic` (keyed by coupon id, so it lands in
 * the coupon's partition), once per process and loss marker; resolves when Kafka acknowledged it.
 */
export function fenceWriter(publisher: Pick<BatchingPublisher, 'send'>, topic: string): (couponId: string, marker: string) => Promise<void> {
  const written = new Map<string, Promise<void>>();
  return (couponId, marker) => {
    const key = `${couponId}\u0000${marker}`;
    let sent = written.get(key);
    if (!sent) {
      const message: Message = { key: couponId, value: Buffer.alloc(0), headers: { [FENCE_HEADER]: marker } };
      sent = publisher.send(topic, message);
      written.set(key, sent);
      // A failed write is tried again by the next request that waits for the rebuild.
      sent.catch(() => { if (written.get(key) === sent) written.delete(key); });
      if (written.size > REMEMBERED) written.delete(written.keys().next().value!);
    }
    return sent;
  };
}
