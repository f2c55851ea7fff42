// `npm run example:notify`: an example downstream consumer of coupon.v1.issued, the way a
// notification service would read it (docs/events.md#an-example-consumer). It decodes each value
// with the registry (any registered version of CouponIssued), skips an event id it has already
// handled (delivery is at least once), prints "user X won coupon Y (#seq)", and commits a record's
// offset only after handling it.
//
//   npm run example:notify                          # follows the topic (group example-notify)
//   npm run example:notify -- --group my-service    # its own position
//   npm run example:notify -- --until-end           # stops once it has read what the topic holds now
//
// Settings as the services read them: KAFKA_BROKERS, KAFKA_TOPIC_PREFIX, SCHEMA_REGISTRY_URL.
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { CouponIssuedSchema } from '../../gen/coupon/events/v1/issued_pb.js';
import { createKafka } from '../events/kafka.ts';
import { EventDecodeError, EventRegistry } from '../events/registry.ts';
import { topicNames } from '../events/topics.ts';
import { configOrExit } from './lifecycle.ts';

const { values: args } = (() => {
  try {
    return parseArgs({ options: { group: { type: 'string', default: 'example-notify' }, 'until-end': { type: 'boolean', default: false } } });
  } catch (err) {
    console.error(`${(err as Error).message}\nusage: npm run example:notify [-- --group <consumer group>] [--until-end]`);
    process.exit(2);
  }
})();
const config = configOrExit('example:notify');
// Logs go to stderr; stdout is the notifications.
const log = pino({ name: 'example-notify', level: config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL }, pino.destination(2));
const topic = topicNames(config.KAFKA_TOPIC_PREFIX).issued;
const decoder = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY }).decoderFor(CouponIssuedSchema);
const kafka = createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-example-notify`, log);

// What the topic holds now, per partition, beyond the group's position: --until-end stops when it is read.
const admin = kafka.admin();
await admin.connect();
const ends = await admin.fetchTopicOffsets(topic).catch((err: unknown) => {
  console.error(`cannot read ${topic}: ${(err as Error).message}`);
  process.exit(1);
});
const [committed] = await admin.fetchOffsets({ groupId: args.group, topics: [topic] });
await admin.disconnect();
const remaining = new Map(ends
  .filter((e) => Number(e.high) > Math.max(Number(e.low), Number(committed?.partitions.find((p) => p.partition === e.partition)?.offset ?? -1)))
  .map((e) => [e.partition, Number(e.high)]));

// A real service keeps the ids it handled where it keeps its effects (its database); this one
// remembers the latest ones in memory.
const handled = new Set<string>();
const REMEMBERED = 100_000;

const consumer = kafka.consumer({ groupId: args.group, maxWaitTimeInMs: 200 });
const stop = async (code: number) => {
  await consumer.disconnect().catch(() => undefined);
  process.exit(code);
};
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));
if (args['until-end'] && remaining.size === 0) await stop(0);

await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
await consumer.run({
  // kafkajs commits a message's offset once this returns; a throw retries it (at least once).
  eachMessage: async ({ partition, message }) => {
    try {
      const event = await decoder.decode(message.value ?? new Uint8Array());
      if (!handled.has(event.eventId)) {
        handled.add(event.eventId);
        if (handled.size > REMEMBERED) handled.delete(handled.values().next().value!);
        process.stdout.write(`user ${event.userId} won coupon ${event.couponId} (#${event.seq})\n`);
      }
    } catch (err) {
      // A record that can never decode is skipped with a word (a real service would dead-letter it);
      // anything else (the registry down) throws, and kafkajs tries the record again.
      if (!(err instanceof EventDecodeError)) throw err;
      console.error(`skipped the record at ${topic}/${partition}/${message.offset}: ${err.message}`);
    }
    if (args['until-end'] && Number(message.offset) + 1 >= (remaining.get(partition) ?? 0)) {
      remaining.delete(partition);
      if (remaining.size === 0) setImmediate(() => void stop(0));
    }
  },
});
