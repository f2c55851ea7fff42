// `npm run reconcile [-- <coupon id>…]`: compares Redis, PostgreSQL and Kafka per coupon, prints a
// table and every difference, and exits 1 on drift that records in flight cannot explain. Without
// ids it checks coupons that are not complete or completed within the last day.
import { configOrExit } from './lifecycle.ts';
import { createLogger } from '../log.ts';
import { createKafka } from '../events/kafka.ts';
import { topicNames } from '../events/topics.ts';
import { formatReports, recentCoupons, reconcileCoupon, type CouponReport } from '../ops/reconcile.ts';
import { redemptionGroups } from '../redemption/wiring.ts';
import { createDb } from '../store/db.ts';
import { createRedis, redisReady } from '../store/redis.ts';
import { redisTarget } from '../config.ts';
import { canonicalCouponId } from '../domain/ids.ts';

const config = configOrExit('reconcile');
const log = createLogger('reconcile', config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL, config.LOG_PRETTY);
const db = createDb(config.DATABASE_URL, 2);
const redis = createRedis(redisTarget(config));
const admin = createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-reconcile`, log).admin();
let code = 0;
try {
  await admin.connect();
  await redisReady(redis);
  const deps = { db, redis, admin, topics: topicNames(config.KAFKA_TOPIC_PREFIX), issuerGroup: config.KAFKA_ISSUER_GROUP, ledgerGroup: redemptionGroups(config.KAFKA_REDEMPTION_GROUP).ledger };
  const ids = process.argv.slice(2).length > 0 ? process.argv.slice(2) : await recentCoupons(db);
  const reports: CouponReport[] = [];
  for (const given of ids) {
    const id = canonicalCouponId(given);
    if (id === undefined) { console.log(`not a coupon id (a UUID): ${given}`); code = 1; continue; }
    const report = await reconcileCoupon(deps, id);
    if (report) reports.push(report);
    else { console.log(`unknown coupon ${id}`); code = 1; }
  }
  console.log(formatReports(reports));
  const drifting = reports.filter((r) => r.drift.length > 0).length;
  console.log(`reconcile: ${reports.length} coupons, ${drifting} with drift`);
  if (drifting > 0) code = 1;
} catch (err) {
  console.error(`reconcile: ${(err as Error).message}`);
  code = 2;
} finally {
  await Promise.allSettled([admin.disconnect(), redis.quit(), db.destroy()]);
}
process.exit(code);
