// kafkajs client construction, with its logs routed into the service's JSON logger.
import { Kafka, logLevel, type LogEntry } from 'kafkajs';
import type { Logger } from '../log.ts';

export function createKafka(brokers: string[], clientId: string, log: Logger): Kafka {
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
      log[toPino(level)]({ kafka: namespace, ...rest }, message);
    },
  });
}
