// kafkajs client construction, with its logs routed into the service's JSON logger, and the
// publishing client whose sends never outlive PUBLISH_TIMEOUT_MS.
import net from 'node:net';
import { Kafka, logLevel, Partitioners, type ISocketFactory, type KafkaConfig, type LogEntry, type Producer } from 'kafkajs';
import type { Logger } from '../log.ts';

// kafkajs 2.2.4 schedules a timer with a negative delay on newer Node versions, which prints a
// TimeoutNegativeWarning on every client start (the timer still fires at once, as intended).
// Filter only that warning; every other warning keeps Node's default printing.
let warningFilterInstalled = false;
function filterKafkajsTimerWarning(): void {
  if (warningFilterInstalled) return;
  warningFilterInstalled = true;
  const defaults = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (warning) => {
    if (warning.name === 'TimeoutNegativeWarning') return;
    for (const listener of defaults) listener(warning);
  });
}

export function createKafka(brokers: string[], clientId: string, log: Logger, overrides: Pick<KafkaConfig, 'connectionTimeout' | 'requestTimeout' | 'retry' | 'socketFactory'> = {}): Kafka {
  filterKafkajsTimerWarning();
  // Every producer here uses kafkajs 2's default (Java-compatible murmur2) partitioner on purpose.
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  const toPino = (level: logLevel) => level === logLevel.ERROR ? 'error' : level === logLevel.WARN ? 'warn' : level === logLevel.INFO ? 'info' : 'debug';
  return new Kafka({
    clientId,
    brokers,
    connectionTimeout: 3_000,
    requestTimeout: 10_000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2_000 },
    logLevel: logLevel.WARN,
    logCreator: () => ({ namespace, level, log: entry }: LogEntry) => {
      const { message, ...rest } = entry;
      // Retries are bounded on purpose: the publisher bounds every send (PUBLISH_TIMEOUT_MS) and
      // the gate treats a late landing as a stale record (tombstone), so exactly-once delivery
      // inside Kafka is not what keeps I1–I3. kafkajs repeats this on every producer start.
      if (message.startsWith('Limiting retries for the idempotent producer')) return;
      log[toPino(level)]({ kafka: namespace, ...rest }, message);
    },
    ...overrides,
  });
}

/**
 * Resets a client's connections so that nothing more is written on them, and refuses new ones,
 * while closed. kafkajs has no way to abandon a send: once its caller has given up, its retries and
 * reconnects go on and may still land the records. The publisher closes the fence when a batch's
 * deadline passes with kafkajs still trying, and opens it again once kafkajs gave up (which it then
 * does at once: every attempt fails on a reset connection).
 */
export class SendFence {
  private readonly sockets = new Set<net.Socket>();
  private closed = false;

  /** kafkajs `socketFactory` for the client this fence guards (plain TCP; the project uses no TLS). */
  readonly socketFactory: ISocketFactory = ({ host, port, onConnect }) => {
    if (this.closed) {
      const refused = new net.Socket();
      process.nextTick(() => refused.destroy(fenced()));
      return refused;
    }
    const socket = net.connect({ host, port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    // A write kafkajs attempts while the fence is closed resets the connection instead.
    const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
    socket.write = (...args: unknown[]) => {
      if (!this.closed) return write(...args);
      cut(socket);
      return false;
    };
    return socket;
  };

  close(): void {
    this.closed = true;
    for (const socket of this.sockets) cut(socket);
  }

  open(): void { this.closed = false; }
}

const fenced = () => Object.assign(new Error('publish deadline passed: connection reset so that nothing more is written'), { code: 'ECONNRESET' });

// RST, not FIN: bytes still in the kernel's send buffer are discarded instead of delivered late.
// kafkajs only listens for 'error' and 'end', so it is told with an error.
function cut(socket: net.Socket): void {
  if (socket.destroyed) return;
  if (socket.connecting) { socket.destroy(fenced()); return; }
  socket.once('close', () => socket.emit('error', fenced()));
  socket.resetAndDestroy();
}

/**
 * The bound on a publish (PUBLISH_TIMEOUT_MS, "T"), kafkajs retries included, for the producers of
 * the gate and of redemption. It is what lets a rebuild after a Redis loss wait a known time
 * (store/loss-guard.ts): no record is written to Kafka later than T after its `send` was called.
 * - The publisher hands a record to kafkajs only before its deadline (T after `send`) and gives up
 *   on it at the deadline (events/publisher.ts).
 * - kafkajs is set to give up by itself before then in the usual failures: a request times out
 *   after T/3 and is retried once, 100 ms later (`retries` must be ≥ 1 for an idempotent producer),
 *   so a broker that stops answering costs 2·T/3 + 0.1 s; a connection attempt times out after T/5.
 * - If kafkajs is still trying at the deadline (a reconnect, a metadata refresh), the publisher
 *   closes the client's SendFence: its connections are reset and nothing more is written until
 *   kafkajs has given up.
 * Only bytes already on the wire at the deadline can still reach the broker, a moment later; the
 * rebuild's margin covers that.
 */
export interface PublishingKafka {
  kafka: Kafka;
  fence: SendFence;
  /** An idempotent producer (acks=all, one request in flight) on this client. */
  producer(): Producer;
}

export function createPublishingKafka(brokers: string[], clientId: string, log: Logger, publishTimeoutMs: number): PublishingKafka {
  const fence = new SendFence();
  const retry = { retries: 1, initialRetryTime: 100, maxRetryTime: 100 };
  const kafka = createKafka(brokers, clientId, log, {
    socketFactory: fence.socketFactory,
    requestTimeout: Math.max(50, Math.floor(publishTimeoutMs / 3)),
    connectionTimeout: Math.max(50, Math.floor(publishTimeoutMs / 5)),
    retry,
  });
  return {
    kafka,
    fence,
    producer: () => kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry, createPartitioner: rememberedPartitions }),
  };
}

/**
 * kafkajs 2's default partitioner, remembering the partition of each (topic, partition count, key):
 * a keyed record's partition depends on nothing else, and the gate's records are keyed by a
 * handful of coupon ids, so the murmur2 hash (and a pass over the partitions) is not paid per record.
 */
const rememberedPartitions = (): ReturnType<typeof Partitioners.DefaultPartitioner> => {
  const partitioner = Partitioners.DefaultPartitioner();
  const remembered = new Map<string, number>();
  return (args) => {
    const { key, partition } = args.message;
    if (typeof key !== 'string' || (partition !== null && partition !== undefined)) return partitioner(args);
    const id = `${args.topic}\u0000${args.partitionMetadata.length}\u0000${key}`;
    let chosen = remembered.get(id);
    if (chosen === undefined) {
      chosen = partitioner(args);
      if (remembered.size >= 10_000) remembered.clear();
      remembered.set(id, chosen);
    }
    return chosen;
  };
};
