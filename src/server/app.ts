// coupon-api: wires config to clients, the CouponService, health and reflection, and the HTTP server.
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { createDb, migrate } from '../store/db.ts';
import { createRedis } from '../store/redis.ts';
import { createKafka } from '../events/kafka.ts';
import { ensureTopics } from '../events/topics.ts';
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
  await ensureTopics(kafkaAdmin, { partitions: config.KAFKA_TOPIC_PARTITIONS, replicationFactor: config.KAFKA_REPLICATION_FACTOR });

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
    routes: routes({}, health),
    log,
  });
  log.info({ url: server.url, port: server.port, health: health.problems() }, 'coupon-api listening');

  return {
    server,
    async close() {
      health.stop();
      await server.close(config.API_SHUTDOWN_GRACE_MS);
      await Promise.allSettled([kafkaAdmin.disconnect(), redis.quit(), db.destroy()]);
    },
  };
}
