// coupon-api: wires config to clients, the CouponService, health and reflection, and the HTTP server.
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { createDb, migrate } from '../store/db.ts';
import { createRedis } from '../store/redis.ts';
import { createKafka } from '../events/kafka.ts';
import { ensureTopics, topicNames } from '../events/topics.ts';
import { BatchingPublisher } from '../events/publisher.ts';
import { EventRegistry } from '../events/registry.ts';
import { CouponScripts } from '../store/scripts.ts';
import { Gate } from '../gate/gate.ts';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { gateHandlers, readHandlers } from './coupon-service.ts';
import { redemptionHandlers } from './redemption-service.ts';
import { createRedemption } from '../redemption/app.ts';
import { errorMapping } from './interceptors.ts';
import { consumerCaughtUp } from '../events/consumer-lag.ts';
import { couponIndexKey } from '../store/keys.ts';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { HealthMonitor, type Probe } from './health.ts';
import { listen, type RunningServer } from './http.ts';
import { routes } from './routes.ts';

export interface ApiApp { server: RunningServer; close(): Promise<void> }

export function dependencyProbes(config: Config, clients: { db: ReturnType<typeof createDb>; redis: ReturnType<typeof createRedis>; kafkaAdmin: ReturnType<ReturnType<typeof createKafka>['admin']> }): Probe[] {
  return [
    { name: 'postgres', check: () => clients.db.raw('select 1') },
    { name: 'redis', check: () => clients.redis.ping() },
    { name: 'kafka', check: () => clients.kafkaAdmin.describeCluster() },
    {
      name: 'schema-registry',
      check: async () => {
        const res = await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects`, { signal: AbortSignal.timeout(1_500) });
        if (!res.ok) throw new Error(`registry answered HTTP ${res.status}`);
      },
    },
  ];
}

export async function startApi(config: Config, log: Logger): Promise<ApiApp> {
  const db = createDb(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const redis = createRedis(config.REDIS_URL);
  const kafka = createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-api`, log);
  const kafkaAdmin = kafka.admin({ retry: { retries: 0 } });

  await migrate(db);
  await kafkaAdmin.connect();
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  await ensureTopics(kafkaAdmin, { partitions: config.KAFKA_TOPIC_PARTITIONS, replicationFactor: config.KAFKA_REPLICATION_FACTOR }, Object.values(topics));

  // Every producer registers its schema before serving; an incompatible schema stops the start.
  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  const issueCodec = await registry.forTopic(topics.issue, CouponIssueRequestedSchema);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1_000 } });
  await producer.connect();
  const publisher = new BatchingPublisher(producer, { lingerMs: config.PUBLISH_LINGER_MS, maxBatch: config.PUBLISH_MAX_BATCH, timeoutMs: config.PUBLISH_TIMEOUT_MS }, log);
  const scripts = new CouponScripts(redis);
  const issuerCaughtUp = consumerCaughtUp(kafkaAdmin, config.KAFKA_ISSUER_GROUP, topics.issue, 2_000);
  const indexKey = couponIndexKey(config.KAFKA_TOPIC_PREFIX);
  const gate = new Gate({ db, redis, scripts, publisher, encoder: issueCodec, topic: topics.issue, indexKey, log, issuerCaughtUp, publishTimeoutMs: config.PUBLISH_TIMEOUT_MS, failpoint: config.FAILPOINT });
  const recovery = every(config.RECOVERY_INTERVAL_MS, () => gate.recoverStale(config.RECOVERY_STALE_MS), log);
  const redemption = await createRedemption({ config, log, db, redis, registry, publisher, admin: kafkaAdmin });
  const redemptionRecovery = every(config.RECOVERY_INTERVAL_MS, () => redemption.recoverStale(config.RECOVERY_STALE_MS), log);

  const health = new HealthMonitor({
    probes: dependencyProbes(config, { db, redis, kafkaAdmin }),
    services: [CouponService.typeName],
    log,
  });
  await health.start();

  const server = await listen({
    host: config.API_HOST,
    port: config.API_PORT,
    maxMessageBytes: config.API_MAX_MESSAGE_BYTES,
    routes: routes({ ...gateHandlers(gate), ...readHandlers(db, redis), ...redemptionHandlers(redemption) }, health),
    interceptors: [errorMapping(log)],
    log,
  });
  log.info({ url: server.url, port: server.port, health: health.problems() }, 'coupon-api listening');

  return {
    server,
    async close() {
      health.stop();
      recovery.stop();
      redemptionRecovery.stop();
      await server.close(config.API_SHUTDOWN_GRACE_MS);
      await publisher.flush();
      await Promise.allSettled([producer.disconnect(), kafkaAdmin.disconnect()]);
      await Promise.allSettled([redis.quit(), db.destroy()]);
    },
  };
}

/** Runs `task` every `ms`, never overlapping itself; errors are logged and the loop goes on. */
function every(ms: number, task: () => Promise<unknown>, log: Logger): { stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const tick = async () => {
    try { await task(); } catch (err) { log.warn({ err: (err as Error).message }, 'background task failed; will retry'); }
    if (!stopped) timer = setTimeout(() => void tick(), ms);
  };
  timer = setTimeout(() => void tick(), ms);
  return { stop() { stopped = true; clearTimeout(timer); } };
}
