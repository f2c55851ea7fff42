// A micro-batching publisher over one idempotent kafkajs producer. kafkajs has no linger or
// batch.size, so without this every RPC would be its own Produce request. Records wait at most
// `lingerMs` (or until `maxBatch` are queued); one batch is in flight at a time, and the next one
// fills while it is, so batches grow with load. `send` resolves only after the broker acknowledged
// the record with acks=all, and rejects with PublishError when it did not within `timeoutMs` of the
// call (or of the start the caller gives): the deadline is the record's own, so an outage cannot
// stretch a caller's wait by the batches queued ahead of it. A record whose deadline passed before
// it was sent fails unambiguously (it was never sent).
//
// Nothing of a record is written to Kafka after its deadline either (with the client's SendFence,
// events/kafka.ts): if kafkajs is still trying when a batch's first deadline passes, the fence
// resets its connections, and the next batch waits until kafkajs has given up. The rebuild after a
// Redis loss relies on that bound (store/loss-guard.ts).
//
// After a failed send the producer is replaced before the next batch. kafkajs rolls its sequence
// numbers back when it gives up on a batch; if that batch was written after all (a lost ack), the
// next batch would reuse its sequence numbers and the broker would take it for a duplicate:
// acknowledged, never written. A new producer gets a new producer id, so that cannot happen.
import type { Message, Producer } from 'kafkajs';
import type { Logger } from '../log.ts';
import { observePublish } from '../metrics/publish.ts';
import { tracePublish } from '../telemetry/messaging.ts';

export class PublishError extends Error {
  override name = 'PublishError';
  /** True when the broker may still have written the record (a timeout, not a refusal). */
  readonly ambiguous: boolean;
  constructor(message: string, ambiguous: boolean, cause?: unknown) {
    super(message, { cause });
    this.ambiguous = ambiguous;
  }
}

export interface PublisherOptions {
  lingerMs: number;
  maxBatch: number;
  timeoutMs: number;
  /** The producers' client's fence (createPublishingKafka); without one, kafkajs may go on trying after a deadline. */
  fence?: { close(): void; open(): void };
}

interface Queued { topic: string; message: Message; deadline: number; resolve: () => void; reject: (err: Error) => void }

export class BatchingPublisher {
  private readonly newProducer: () => Producer;
  private producer: Producer | undefined;
  /** Set after a failed send: the next batch waits for a new, connected producer. */
  private renewal: Promise<Producer> | undefined;
  private readonly opts: PublisherOptions;
  private readonly log: Logger;
  private queue: Queued[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Fails queued records at their deadline while a batch is in flight. */
  private expiryTimer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  /** Batches sent and records acknowledged, for benchmarks and logs. */
  readonly stats = { batches: 0, records: 0, failedRecords: 0, producersReplaced: 0 };

  /** `newProducer` makes an idempotent producer (acks=all); the publisher connects and replaces it. */
  constructor(newProducer: () => Producer, opts: PublisherOptions, log: Logger) {
    this.newProducer = newProducer;
    this.opts = opts;
    this.log = log;
  }

  /**
   * Connects the first producer. The publishing client's timeouts are short on purpose (the publish
   * bound), so a broker that is slow for a moment at start is tried again before giving up.
   */
  async connect(attempts = 5): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        this.producer = await this.renew(undefined);
        return;
      } catch (err) {
        if (attempt >= attempts) throw err;
        await new Promise((r) => setTimeout(r, 500 * 2 ** (attempt - 1)));
      }
    }
  }

  /** Disconnects the current producer; call after flush() on shutdown. */
  async disconnect(): Promise<void> {
    const producer = this.producer ?? await this.renewal?.catch(() => undefined);
    await producer?.disconnect();
  }

  /**
   * Queues the record; resolves once acknowledged. Its deadline is `timeoutMs` after `startedAtMs`
   * (Date.now() clock; default now): a caller whose record stands for something decided earlier (a
   * reservation) passes when that was, so the bound on when the record can reach Kafka counts from
   * the decision, however long the caller took to get here. A start already past the timeout fails
   * at once, unsent.
   */
  send(topic: string, message: Message, startedAtMs?: number): Promise<void> {
    // The record carries the trace of whoever queued it (telemetry/messaging.ts).
    const traced = tracePublish(topic, message);
    const now = Date.now();
    const deadline = Math.min(now, startedAtMs ?? now) + this.opts.timeoutMs;
    const sent = new Promise<void>((resolve, reject) => {
      if (deadline <= now) {
        this.fail([{ topic, message: traced.message, deadline, resolve, reject }], new PublishError(`not sent: its ${this.opts.timeoutMs} ms began ${now - (startedAtMs ?? now)} ms ago`, false));
        return;
      }
      this.queue.push({ topic, message: traced.message, deadline, resolve, reject });
      if (this.queue.length >= this.opts.maxBatch) this.kick();
      else this.timer ??= setTimeout(() => this.kick(), this.opts.lingerMs);
    });
    observePublish(this, sent);
    traced.settled(sent);
    return sent;
  }

  /** Records waiting to be sent (coupon_publish_queue_depth). */
  get queueDepth(): number { return this.queue.length; }

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
    if (this.queue.length === 0) return;
    const now = Date.now();
    const expired = this.queue.filter((q) => q.deadline <= now);
    if (expired.length > 0) {
      this.queue = this.queue.filter((q) => q.deadline > now);
      this.fail(expired, new PublishError(`not sent within ${this.opts.timeoutMs} ms: Kafka is slow or unreachable`, false));
      if (this.queue.length === 0) return;
    }
    if (this.inFlight) {
      // Deadlines count from each caller's start, so the earliest may be anywhere in the queue.
      let first = Infinity;
      for (const q of this.queue) first = Math.min(first, q.deadline);
      this.expiryTimer ??= setTimeout(() => { this.expiryTimer = undefined; this.kick(); }, Math.max(1, first - now));
      return;
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
    const deadline = Math.min(...batch.map((q) => q.deadline));
    let timer: NodeJS.Timeout | undefined;
    const timeout = (what: string, ambiguous: boolean) => new Promise<never>((_, reject) => {
      // The batch waits until its earliest record's deadline.
      timer = setTimeout(() => reject(new PublishError(`${what} within ${this.opts.timeoutMs} ms`, ambiguous)), Math.max(1, deadline - Date.now()));
    });

    let producer: Producer;
    try {
      producer = await Promise.race([this.currentProducer(), timeout('no producer connected to Kafka', false)]);
    } catch (err) {
      // Nothing of this batch was handed to kafkajs.
      this.fail(batch, err instanceof PublishError ? err : new PublishError(`no producer connected to Kafka: ${(err as Error).message}`, false, err));
      return;
    } finally {
      clearTimeout(timer);
    }

    const waitMs = deadline - Date.now();
    if (waitMs <= 0) {
      this.fail(batch, new PublishError(`not sent within ${this.opts.timeoutMs} ms: no producer connected to Kafka in time`, false));
      return;
    }
    const sending = producer.sendBatch({ acks: -1, timeout: waitMs, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
    let late: boolean;
    try {
      await Promise.race([sending, timeout('no acknowledgement from Kafka', true)]);
      this.stats.batches++;
      this.stats.records += batch.length;
      for (const q of batch) q.resolve();
      return;
    } catch (err) {
      late = err instanceof PublishError;
      this.fail(batch, late ? err as PublishError : new PublishError(`Kafka refused the batch: ${(err as Error).message}`, isAmbiguous(err), err));
    } finally {
      clearTimeout(timer);
    }
    if (late && this.opts.fence) await this.cutOff(sending);
    this.replace(producer);
  }

  private fail(records: Queued[], error: PublishError): void {
    this.stats.failedRecords += records.length;
    this.log.warn({ err: error.message, records: records.length, ambiguous: error.ambiguous }, 'publish failed');
    for (const q of records) q.reject(error);
  }

  /** The connected producer, or the one being connected (after a failure, or if the last connect failed). */
  private currentProducer(): Promise<Producer> {
    if (this.producer) return Promise.resolve(this.producer);
    return this.renewal ?? this.renew(undefined);
  }

  /** Replaces a producer whose sequence numbers can no longer be trusted (see the top of this file). */
  private replace(failed: Producer): void {
    this.producer = undefined;
    this.stats.producersReplaced++;
    void this.renew(failed).catch(() => undefined);
  }

  private renew(failed: Producer | undefined): Promise<Producer> {
    const renewal = (async () => {
      await failed?.disconnect().catch(() => undefined);
      const next = this.newProducer();
      try {
        await next.connect();
      } catch (err) {
        await next.disconnect().catch(() => undefined);
        throw err;
      }
      return next;
    })();
    this.renewal = renewal;
    renewal.then((next) => {
      if (this.renewal !== renewal) return;
      this.renewal = undefined;
      this.producer = next;
    }, (err: unknown) => {
      if (this.renewal !== renewal) return;
      // The next batch that needs a producer tries again.
      this.renewal = undefined;
      this.log.warn({ err: (err as Error).message }, 'could not connect a new Kafka producer');
    });
    return renewal;
  }

  /**
   * The deadline passed with kafkajs still trying: reset its connections so nothing more of the
   * batch is written, and send nothing else until it has given up.
   */
  private async cutOff(sending: Promise<unknown>): Promise<void> {
    this.opts.fence!.close();
    try {
      await sending;
    } catch {
      // Expected: every attempt now fails on a reset connection.
    } finally {
      this.opts.fence!.open();
    }
  }
}

// A request that timed out or lost its connection may have been written; a refused one was not.
function isAmbiguous(err: unknown): boolean {
  const name = (err as { name?: string }).name ?? '';
  return /Timeout|Connection|NumberOfRetriesExceeded/.test(name);
}
