// coupon-issuer: joins its consumer group on coupon.v1.issue. The batch logic arrives with issue #5;
// until then it resolves no offsets, so nothing is skipped.
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { createKafka } from '../events/kafka.ts';
import { ensureTopics, Topics } from '../events/topics.ts';

export interface IssuerApp { close(): Promise<void> }

export async function startIssuer(config: Config, log: Logger): Promise<IssuerApp> {
  const kafka = createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-issuer`, log);
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, { partitions: config.KAFKA_TOPIC_PARTITIONS, replicationFactor: config.KAFKA_REPLICATION_FACTOR });
  await admin.disconnect();
  const consumer = kafka.consumer({ groupId: config.KAFKA_ISSUER_GROUP });
  await consumer.connect();
  await consumer.subscribe({ topic: Topics.issue, fromBeginning: true });
  const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
  await consumer.run({ eachBatchAutoResolve: false, eachBatch: async () => {} });
  await joined;
  log.info({ group: config.KAFKA_ISSUER_GROUP, topic: Topics.issue }, 'coupon-issuer consuming');
  return { close: () => consumer.disconnect() };
}
