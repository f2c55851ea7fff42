// One test file's coupon-api and coupon-issuer: started before the file's tests (under a topic
// prefix and consumer groups of its own), stopped after them, with an operator client; the file's
// topics and registry subjects are dropped at the end. What most integration test files start with.
// With `ownRedis`, both run on a redis-server of the file's own (restarted or stopped by the tests
// that lose Redis's state on purpose); with `issuer: false`, the test starts the issuer itself.
import { afterAll, beforeAll } from 'vitest';
import { topicNames } from '../../src/events/topics.ts';
import { startService, type ServiceProcess } from './processes.ts';
import { couponClient, type CouponClient } from './coupons.ts';
import { startOwnRedis, type OwnRedis } from './redis-server.ts';
import { dropEnvironment, kafka, uniqueEnv } from './stack.ts';

export interface FileServices {
  readonly env: ReturnType<typeof uniqueEnv> & Record<string, string>;
  readonly topics: ReturnType<typeof topicNames>;
  /** Set once the file's beforeAll ran. */
  api: ServiceProcess;
  issuer: ServiceProcess;
  /** An operator's @grpc/grpc-js client of `api`. */
  client: CouponClient;
  /** With `ownRedis`: the file's own redis-server (env.REDIS_URL names it once beforeAll ran). */
  redis: OwnRedis;
}

export interface FileServicesOptions {
  /** Run on a redis-server of the file's own instead of the shared one [false]. */
  ownRedis?: boolean;
  /** Start coupon-issuer with coupon-api [true]; false leaves `issuer` to the test. */
  issuer?: boolean;
}

/** Call at the top of a test file: `name` names its environment, `extraEnv` adds settings for both processes. */
export function fileServices(name: string, extraEnv: Record<string, string> = {}, opts: FileServicesOptions = {}): FileServices {
  const env: FileServices['env'] = { ...uniqueEnv(name), ...extraEnv };
  const s = { env, topics: topicNames(env.KAFKA_TOPIC_PREFIX) } as FileServices;
  beforeAll(async () => {
    if (opts.ownRedis) {
      s.redis = await startOwnRedis();
      env.REDIS_URL = s.redis.url;
    }
    const [api, issuer] = await Promise.all([startService('api', env), opts.issuer === false ? Promise.resolve(undefined) : startService('issuer', env)]);
    s.api = api;
    if (issuer) s.issuer = issuer;
    s.client = couponClient(s.api.address);
  }, 120_000);
  afterAll(async () => {
    s.client?.close();
    await Promise.all([s.api?.stop(), s.issuer?.stop()]);
    await s.redis?.stop();
    await dropEnvironment(kafka(), s.topics);
  });
  return s;
}
