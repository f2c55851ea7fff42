// The real system the model test drives: a coupon-api with two workers (API_WORKERS=2) on a private
// redis-server (a flush must never touch the shared one) and reaching Kafka through a proxy that can
// hold its publishes, plus a coupon-issuer, all on private topics and groups (uniqueEnv). Shared by
// test/model/model.test.ts and `npm run model` (test/model/run.ts).
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import type { Producer } from 'kafkajs';
import { PaymentResultSchema, PaymentStatus } from '../../gen/payment/v1/payment_pb.js';
import { createPaymentCoupons, type PaymentCoupons } from '../../src/client/payment.ts';
import { EventRegistry, type EventCodec } from '../../src/events/registry.ts';
import { topicNames } from '../../src/events/topics.ts';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { localToken } from '../../scripts/local-auth.ts';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { createGrpcClient } from '../../src/client/grpc.ts';
import type { Role } from '../support/auth.ts';
import type { CouponClient } from '../support/coupons.ts';
import { kafkaProxy, type KafkaProxy } from '../support/kafka-proxy.ts';
import { startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { connectJsonCoupons, type ConnectJsonCoupons } from '../support/connect-json.ts';
import { config, kafka, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';
import { GATE_LOCAL_RECHECK_MS } from './model.ts';

// Short enough that a held publish fails within a command, and a rebuild after a flush waits only
// PUBLISH_TIMEOUT_MS + 2 s; long enough that a loaded machine does not fail publishes by itself.
export const PUBLISH_TIMEOUT_MS = 3_000;

export interface System {
  /** Operator: CreateCoupon, GetCoupon, ListCoupons, UpdateCoupon, PauseCoupon, ResumeCoupon, CloseCoupon. */
  operator: CouponClient;
  /** Storefront: IssueCoupon, GetUserCoupon, ListUserCoupons. */
  storefront: CouponClient;
  /** Storefront's IssueCoupon over Connect JSON and plain HTTP (coupon-api's short path, server/short-path.ts). */
  storefrontJson: ConnectJsonCoupons;
  /** The payment service's client (src/client/payment.ts); its raw client shows codes and reasons. */
  payments: PaymentCoupons;
  redis: PrivateRedis;
  proxy: KafkaProxy;
  api: ServiceProcess;
  issuer: ServiceProcess;
  issuerPaused: boolean;
  /** Publishes a PaymentResult on payment.v1.result and waits until the consumer has applied it. */
  publishPaymentFailed(orderId: string, couponId: string, userId: string): Promise<void>;
  pauseIssuer(): void;
  resumeIssuer(): void;
  /** SIGKILLs one coupon-api worker and waits for the primary's replacement; new client connections. */
  killWorker(): Promise<void>;
  close(): Promise<void>;
}

// A long run outlives a token (an hour): each role's token is renewed every 30 minutes.
const tokens = new Map<Role, { atMs: number; token: Promise<string> }>();
const tokenOf = (role: Role) => (): Promise<string> => {
  const held = tokens.get(role);
  if (held && Date.now() - held.atMs < 30 * 60_000) return held.token;
  const fresh = { atMs: Date.now(), token: localToken({ roles: [role], sub: `model-${role}` }) };
  tokens.set(role, fresh);
  return fresh.token;
};
const separate = { 'grpc.use_local_subchannel_pool': 1 };

const workerPids = (api: ServiceProcess) => api.logs.filter((l) => l.msg === 'worker listening').map((l) => Number(l.pid));
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

export async function startSystem(): Promise<System> {
  const env = { ...uniqueEnv('model'), PUBLISH_TIMEOUT_MS: String(PUBLISH_TIMEOUT_MS), RECOVERY_INTERVAL_MS: '200', RECOVERY_STALE_MS: '10000', ISSUE_BACKOFF_MS: '100',
    // The sold-out view's staleness after a change, which the model allows for (test/model/model.ts).
    GATE_LOCAL_RECHECK_MS: String(GATE_LOCAL_RECHECK_MS) };
  const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
  const groups = redemptionGroups(env.KAFKA_REDEMPTION_GROUP);
  const redis = await startPrivateRedis();
  const proxy = await kafkaProxy(Number(config.KAFKA_BROKERS[0]!.split(':')[1]));
  // Two workers start one after another: on this loaded machine that can take over a minute. A
  // failed start takes down what did start.
  const started = await Promise.allSettled([
    startService('api', { ...env, REDIS_URL: redis.url, KAFKA_BROKERS: proxy.brokers, API_WORKERS: '2' }, undefined, 180_000),
    startService('issuer', { ...env, REDIS_URL: redis.url }, undefined, 180_000),
  ]);
  if (started.some((s) => s.status === 'rejected')) {
    for (const s of started) if (s.status === 'fulfilled') await s.value.stop();
    await proxy.close();
    await redis.stop();
    throw (started.find((s) => s.status === 'rejected') as PromiseRejectedResult).reason;
  }
  const [api, issuer] = started.map((s) => (s as PromiseFulfilledResult<ServiceProcess>).value) as [ServiceProcess, ServiceProcess];
  const k = kafka();
  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  let codec: EventCodec<typeof PaymentResultSchema> | undefined;
  let producer: Producer | undefined;

  const clients = () => ({
    operator: createGrpcClient(CouponService, api.address, { channelOptions: separate, token: tokenOf('operator') }),
    storefront: createGrpcClient(CouponService, api.address, { channelOptions: separate, token: tokenOf('storefront') }),
    storefrontJson: connectJsonCoupons(api.url, tokenOf('storefront')),
    payments: createPaymentCoupons(api.address, { token: tokenOf('payment'), channelOptions: separate }),
  });
  const closeClients = (s: System) => { s.operator.close(); s.storefront.close(); s.payments.close(); };

  const system: System = {
    ...clients(),
    redis, proxy, api, issuer,
    issuerPaused: false,
    async publishPaymentFailed(orderId, couponId, userId) {
      codec ??= await registry.forTopic(topics.paymentResult, PaymentResultSchema);
      if (!producer) { producer = k.producer(); await producer.connect(); }
      const value = codec.encode(create(PaymentResultSchema, { orderId, status: PaymentStatus.FAILED, coupons: [{ couponId, userId }], occurredAt: timestampNow() }));
      await producer.send({ topic: topics.paymentResult, acks: -1, messages: [{ key: orderId, value }] });
      await waitForCaughtUp(k, groups.paymentResult, topics.paymentResult, 60_000);
    },
    pauseIssuer() { issuer.child.kill('SIGSTOP'); system.issuerPaused = true; },
    resumeIssuer() { issuer.child.kill('SIGCONT'); system.issuerPaused = false; },
    async killWorker() {
      const live = workerPids(api).filter(alive);
      const before = workerPids(api).length;
      process.kill(live[live.length - 1]!, 'SIGKILL');
      await until('a replacement coupon-api worker', () => Promise.resolve(workerPids(api).length > before), 60_000, 100);
      closeClients(system);
      Object.assign(system, clients());
    },
    async close() {
      closeClients(system);
      if (system.issuerPaused) system.resumeIssuer();
      await producer?.disconnect().catch(() => undefined);
      await Promise.all([api.stop(), issuer.stop()]);
      await proxy.close();
      await redis.stop();
      const admin = k.admin();
      await admin.connect();
      const existing = new Set(await admin.listTopics().catch(() => []));
      const ours = Object.values(topics).filter((t) => existing.has(t));
      if (ours.length > 0) await admin.deleteTopics({ topics: ours }).catch(() => undefined);
      await admin.disconnect();
      for (const topic of Object.values(topics)) {
        await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value`, { method: 'DELETE' }).catch(() => undefined);
        await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value?permanent=true`, { method: 'DELETE' }).catch(() => undefined);
      }
    },
  };
  return system;
}
