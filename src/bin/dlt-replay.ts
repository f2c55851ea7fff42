// `npm run dlt:replay [-- issue|redemption|payment-result]`: puts dead-lettered records back on
// their source topic, once the cause is fixed. Safe to run again: it resumes where it stopped.
import { configOrExit } from './lifecycle.ts';
import { createLogger } from '../log.ts';
import { createKafka } from '../events/kafka.ts';
import { replayDeadLetters, replayGroupId } from '../events/replay.ts';
import { topicNames } from '../events/topics.ts';
import { createDb } from '../store/db.ts';
import { markReplayed } from '../store/dead-letters.ts';

const which = process.argv[2] ?? 'issue';
const config = configOrExit('dlt-replay');
const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
const pairs: Record<string, [string, string]> = {
  issue: [topics.issueDlt, topics.issue],
  redemption: [topics.redemptionDlt, topics.redemption],
  'payment-result': [topics.paymentResultDlt, topics.paymentResult],
};
const pair = pairs[which];
if (!pair) {
  console.error(`dlt-replay: unknown topic "${which}"; use one of ${Object.keys(pairs).join(', ')}`);
  process.exit(2);
}
const log = createLogger('dlt-replay', config.LOG_LEVEL, config.LOG_PRETTY);
const [dltTopic, fallbackTopic] = pair;
const db = createDb(config.DATABASE_URL, 2);
try {
  const result = await replayDeadLetters(createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-dlt-replay`, log), {
    dltTopic, fallbackTopic, groupId: replayGroupId(config.KAFKA_CLIENT_ID, dltTopic), log, keyIsCouponId: which !== 'payment-result',
    // The records are back on their topic: rebuilds no longer need to wait for them.
    onReplayed: (sources) => markReplayed(db, sources),
  });
  console.log(JSON.stringify({ dltTopic, ...result }));
} finally {
  await db.destroy();
}
