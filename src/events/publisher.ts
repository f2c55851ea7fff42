// A micro-batching publisher over one idempotent kafkajs producer. kafkajs has no linger or
// batch.size, so without this every RPC would be its own Produce request. Records wait at most
// `lingerMs` (or until `maxBatch` are queued); one batch is in flight at a time, and the next one
// fills while it is, so batches grow with load. `send` resolves only after the broker acknowledged
// the record with acks=all, and rejects with PublishError when it did not within `timeoutMs` of the
// call: the deadline is the record's own, counted from when it was queued, so an outage cannot
// stretch a caller's wait by the batches queued ahead of it. A record whose deadline passed before
// it was sent fails unambiguously (it was never sent).
import type { Message, Producer } from 'kafkajs';
import type { Logger } from '../log.ts';

export class PublishError extends Error {
  override name = 'PublishError';
  /** True when the broker may still have written the record (a timeout, not a refusal). */
  readonly ambiguous: boolean;
  constructor(message: string, ambiguous: boolean, cause?: unknown) {
    super(message, { cause });
    this.ambiguous = ambiguous;
  }
}

export interface PublisherOptions { lingerMs: number; maxBatch: number; timeoutMs: number }

interface Queued { topic: string; message: Message; deadline: number; resolve: () => void; reject: (err: Error) => void }

export class BatchingPublisher {
  private readonly producer: Producer;
  private readonly opts: PublisherOptions;
  private readonly log: Logger;
  private queue: Queued[] = [];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  /** Batches sent and records acknowledged, for benchmarks and logs. */
  readonly stats = { batches: 0, records: 0, failedRecords: 0 };

  constructor(producer: Producer, opts: PublisherOptions, log: Logger) {
    this.producer = producer;
    this.opts = opts;
    this.log = log;
  }

  send(topic: string, message: Message): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ topic, message, deadline: Date.now() + this.opts.timeoutMs, resolve, reject });
      if (this.queue.length >= this.opts.maxBatch) this.kick();
      else this.timer ??= setTimeout(() => this.kick(), this.opts.lingerMs);
    });
  }

  /** Sends everything queued and waits for it; used on shutdown. */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.inFlight) {
      this.kick();
      await this.inFlight;
    }
  }

  private kick(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inFlight || this.queue.length === 0) return;
    const now = Date.now();
    const expired = this.queue.filter((q) => q.deadline <= now);
    if (expired.length > 0) {
      this.queue = this.queue.filter((q) => q.deadline > now);
      this.stats.failedRecords += expired.length;
      const err = new PublishError(`not sent within ${this.opts.timeoutMs} ms: Kafka is slow or unreachable`, false);
      for (const q of expired) q.reject(err);
      if (this.queue.length === 0) return;
    }
    const batch = this.queue.splice(0, this.opts.maxBatch);
    this.inFlight = this.sendBatch(batch).finally(() => {
      this.inFlight = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async sendBatch(batch: Queued[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const q of batch) {
      const list = byTopic.get(q.topic) ?? [];
      list.push(q.message);
      byTopic.set(q.topic, list);
    }
    let timer: NodeJS.Timeout | undefined;
    // The batch waits until its earliest record's deadline.
    const waitMs = Math.max(1, Math.min(...batch.map((q) => q.deadline)) - Date.now());
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new PublishError(`no acknowledgement from Kafka within ${this.opts.timeoutMs} ms`, true)), waitMs);
    });
    try {
      await Promise.race([
        this.producer.sendBatch({ acks: -1, timeout: waitMs, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) }),
        timeout,
      ]);
      this.stats.batches++;
      this.stats.records += batch.length;
      for (const q of batch) q.resolve();
    } catch (err) {
      const error = err instanceof PublishError ? err : new PublishError(`Kafka refused the batch: ${(err as Error).message}`, isAmbiguous(err), err);
      this.stats.failedRecords += batch.length;
      this.log.warn({ err: error.message, records: batch.length, ambiguous: error.ambiguous }, 'publish failed');
      for (const q of batch) q.reject(error);
    } finally {
      clearTimeout(timer);
    }
  }
}

// A request that timed out or lost its connection may have been written; a refused one was not.
function isAmbiguous(err: unknown): boolean {
  const name = (err as { name?: string }).name ?? '';
  return /Timeout|Connection|NumberOfRetriesExceeded/.test(name);
}
