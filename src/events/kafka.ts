// kafkajs client construction, with its logs routed into the service's JSON logger.
import { Kafka, logLevel, type LogEntry } from 'kafkajs';
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

export function createKafka(brokers: string[], clientId: string, log: Logger): Kafka {
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
  });
}
