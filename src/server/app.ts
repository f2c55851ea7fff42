// coupon-api: wires config to clients, the CouponService, health and reflection, and the HTTP server.
import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { redisTarget, type Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { createDb, migrate } from '../store/db.ts';
import { createRedis, redisReady } from '../store/redis.ts';
import { ReplicaAcks } from '../store/replica-acks.ts';
import { createKafka, createPublishingKafka } from '../events/kafka.ts';
import { Alerter } from '../events/alert.ts';
import { ensureTopics, topicNames } from '../events/topics.ts';
import { BatchingPublisher } from '../events/publisher.ts';
import { EventRegistry } from '../events/registry.ts';
import { CouponScripts } from '../store/scripts.ts';
import { CouponCatalog } from '../catalog/catalog.ts';
import { Gate } from '../gate/gate.ts';
import { SoldOutViews } from '../gate/sold-out-view.ts';
import { GateRebuilder } from '../gate/rebuild.ts';
import { LossGuard, lossSettleMs } from '../store/loss-guard.ts';
import { recordGateRelease } from '../store/gate-releases.ts';
import { recoverStaleReservations } from '../gate/recovery.ts';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { couponService } from './coupon-service.ts';
import { createRedemption } from '../redemption/wiring.ts';
import { errorMapping } from './interceptors.ts';
import { authInterceptor, jwksFrom } from './auth.ts';
import { consumerCaughtUp } from '../events/consumer-lag.ts';
import { ActiveCoupons } from '../store/active-coupons.ts';
import { activeCouponsKey, legacyCouponIndexKey } from '../store/keys.ts';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { dependencyProbes, DependencyMonitor } from '../ops/dependencies.ts';
import { every } from '../lib/every.ts';
import { CouponChanges } from '../catalog/changes.ts';
import { codecWhenAvailable } from '../events/producer-start.ts';
import { fenceWriter } from '../events/fence.ts';
import { grpcMetrics } from './grpc-metrics.ts';
import { rpcTracing } from '../telemetry/rpc.ts';
import { tracingRequested } from '../telemetry/tracing.ts';
import { exposeProcessMetrics } from '../metrics/serve.ts';
import { listen, type RunningServer } from './http.ts';
import { shortPathMethod } from './short-path.ts';
import { routes } from './routes.ts';

export interface ApiApp { server: RunningServer; close(): Promise<void> }

export async function startApi(config: Config, log: Logger): Promise<ApiApp> {
  const db = createDb(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const redis = createRedis(redisTarget(config));
  const kafka = createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-api`, log);
  const kafkaAdmin = kafka.admin({ retry: { retries: 0 } });

  await migrate(db);
  // A cluster takes no command before it has its slot map (no offline queue): wait for it once.
  await redisReady(redis);
  await kafkaAdmin.connect();
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  await ensureTopics(kafkaAdmin, { partitions: config.KAFKA_TOPIC_PARTITIONS, replicationFactor: config.KAFKA_REPLICATION_FACTOR, minInsyncReplicas: config.KAFKA_MIN_INSYNC_REPLICAS }, Object.values(topics));

  // Every producer registers its schema before serving; an incompatible schema stops the start.
  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  const alerter = new Alerter(log, config.ALERT_WEBHOOK_URL);
  const issueCodec = await codecWhenAvailable(registry, topics.issue, CouponIssueRequestedSchema, { log, alerter });

  // Its own client: the bound on every send (PUBLISH_TIMEOUT_MS) resets this client's connections.
  const publishing = createPublishingKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-api-publish`, log, config.PUBLISH_TIMEOUT_MS);
  const publisher = new BatchingPublisher(publishing.producer, { lingerMs: config.PUBLISH_LINGER_MS, maxBatch: config.PUBLISH_MAX_BATCH, timeoutMs: config.PUBLISH_TIMEOUT_MS, fence: publishing.fence }, log);
  await publisher.connect();
  // The coupons the recovery loops walk: marked by the gate's and redemption's scripts (store/active-coupons.ts).
  const active = new ActiveCoupons(redis, activeCouponsKey(config.KAFKA_TOPIC_PREFIX));
  const scripts = new CouponScripts(redis, { active, retentionMs: config.REDIS_RETENTION });
  const catalog = new CouponCatalog({ db, redis, scripts, log });
  const guard = new LossGuard({
    redis, scripts, db, alerter, log,
    state: 'gate',
    settleMs: lossSettleMs(config.PUBLISH_TIMEOUT_MS),
    consumerCaughtUp: consumerCaughtUp(kafkaAdmin, config.KAFKA_ISSUER_GROUP, topics.issue, 2_000),
    fence: fenceWriter(publisher, topics.issue),
    topic: topics.issue,
    dltTopic: topics.issueDlt,
    blockedAlert: 'coupon.gate.rebuild_blocked',
  });
  const rebuilder = new GateRebuilder({ db, redis, scripts, log, guard });
  const gate = new Gate({
    redis, scripts, publisher, encoder: issueCodec, topic: topics.issue, rebuilder, log,
    recordRelease: (release) => recordGateRelease(db, release),
    publishTimeoutMs: config.PUBLISH_TIMEOUT_MS, recoveryStaleMs: config.RECOVERY_STALE_MS, failpoint: config.FAILPOINT,
    soldOut: config.GATE_LOCAL_SOLD_OUT
      ? new SoldOutViews({ redis, scripts, log, recheckMs: config.GATE_LOCAL_RECHECK_MS, lifetimeMs: config.GATE_LOCAL_LIFETIME_MS })
      : undefined,
    acks: new ReplicaAcks(redis, { replicas: config.REDIS_WAIT_REPLICAS, timeoutMs: config.REDIS_WAIT_TIMEOUT_MS }),
  });
  const changes = new CouponChanges({ db, scripts, log, ensureGate: (couponId) => gate.ensureArmed(couponId), failAfterGate: config.FAILPOINT === 'fail-change-after-gate' });
  const recoveryDeps = { redis, scripts, active, legacyIndexKey: legacyCouponIndexKey(config.KAFKA_TOPIC_PREFIX), publisher, encoder: issueCodec, topic: topics.issue, log };
  const recovery = every(config.RECOVERY_INTERVAL_MS, () => recoverStaleReservations(recoveryDeps, config.RECOVERY_STALE_MS), retryLater(log));
  const redemption = await createRedemption({ config, log, db, redis, registry, publisher, admin: kafkaAdmin, alerter });
  const redemptionRecovery = every(config.RECOVERY_INTERVAL_MS, () => redemption.recoverStale(config.RECOVERY_STALE_MS), retryLater(log));

  const health = new DependencyMonitor({ probes: dependencyProbes(config, { db, redis, kafkaAdmin }), log });
  await health.start();

  const metrics = await exposeProcessMetrics(config.API_HOST, config.API_METRICS_PORT);
  if (config.AUTH_MODE === 'off') log.warn({ host: config.API_HOST }, 'AUTH_MODE=off: every caller may call every RPC (allowed on loopback only)');
  const service = couponService({ db, redis, catalog, changes, gate, redemption });
  const tracing = tracingRequested();
  const server = await listen({
    host: config.API_HOST,
    port: config.API_PORT,
    maxMessageBytes: config.API_MAX_MESSAGE_BYTES,
    acceptSockets: config.API_ACCEPT_SOCKETS,
    // A worker's primary checked the port and picked it (API_PORT=0); workers share it.
    sharedPort: cluster.isWorker,
    tls: config.API_TLS_CERT && config.API_TLS_KEY
      ? { cert: readFileSync(config.API_TLS_CERT), key: readFileSync(config.API_TLS_KEY), clientCa: config.API_TLS_CLIENT_CA ? readFileSync(config.API_TLS_CLIENT_CA) : undefined }
      : undefined,
    limits: {
      firstByteTimeoutMs: config.API_FIRST_BYTE_TIMEOUT_MS,
      headersTimeoutMs: config.API_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: config.API_REQUEST_TIMEOUT_MS,
      idleTimeoutMs: config.API_IDLE_TIMEOUT_MS,
      maxConnections: config.API_MAX_CONNECTIONS,
      maxConcurrentStreams: config.API_MAX_CONCURRENT_STREAMS,
      maxSessionMemoryMb: config.API_MAX_SESSION_MEMORY_MB,
    },
    routes: routes(service, health),
    // The hot path of a sale, past connect-es's generic handling (same interceptors and answers).
    // Tracing needs connect-es's spans, so it turns the short path off.
    shortPath: config.API_SHORT_PATH && !tracing ? [shortPathMethod(CouponService.method.issueCoupon, service.issueCoupon)] : [],
    // Without a trace exporter there is no span to record: the tracing interceptor is left out
    // (it cost about 1% of coupon-api's CPU in a sale for no-op spans).
    interceptors: [
      grpcMetrics([CouponService]),
      ...(tracing ? [rpcTracing()] : []),
      ...(config.AUTH_MODE === 'jwt' ? [authInterceptor({ keys: jwksFrom({ url: config.AUTH_JWKS_URL, file: config.AUTH_JWKS_FILE }), issuer: config.AUTH_ISSUER, audience: config.AUTH_AUDIENCE, log })] : []),
      errorMapping(log),
    ],
    log,
  });
  const ready = { url: server.url, port: server.port, tls: Boolean(config.API_TLS_CERT), mutualTls: Boolean(config.API_TLS_CLIENT_CA), health: health.problems() };
  // A node:cluster worker says so with its pid; its primary prints `coupon-api listening` once all listen.
  if (cluster.isWorker) log.info({ ...ready, pid: process.pid }, 'worker listening');
  else log.info({ ...ready, metricsPort: metrics?.port }, 'coupon-api listening');

  return {
    server,
    async close() {
      health.stop();
      recovery.stop();
      redemptionRecovery.stop();
      await server.close(config.API_SHUTDOWN_GRACE_MS);
      await gate.drainReleases(config.API_SHUTDOWN_GRACE_MS);
      await metrics?.close();
      await publisher.flush();
      await Promise.allSettled([publisher.disconnect(), kafkaAdmin.disconnect()]);
      await Promise.allSettled([redis.quit(), db.destroy()]);
    },
  };
}

/** A background task's failure: logged, and the loop tries again at its next turn. */
const retryLater = (log: Logger) => (err: Error) => log.warn({ err: err.message }, 'background task failed; will retry');
