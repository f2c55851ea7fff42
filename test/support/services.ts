// One test file's coupon-api and coupon-issuer: started before the file's tests (under a topic
// prefix and consumer groups of its own), stopped after them, with an operator client; the file's
// topics and registry subjects are dropped at the end. What most integration test files start with.
import { afterAll, beforeAll } from 'vitest';
import { topicNames } from '../../src/events/topics.ts';
import { startService, type ServiceProcess } from './processes.ts';
import { couponClient, type CouponClient } from './coupons.ts';
import { dropEnvironment, kafka, uniqueEnv } from './stack.ts';

export interface FileServices {
  readonly env: ReturnType<typeof uniqueEnv> & Record<string, string>;
  readonly topics: ReturnType<typeof topicNames>;
  /** Set once the file's beforeAll ran. */
  api: ServiceProcess;
  issuer: ServiceProcess;
  /** An operator's @grpc/grpc-js client of `api`. */
  client: CouponClient;
}

/** Call at the top of a test file: `name` names its environment, `extraEnv` adds settings for both processes. */
export function fileServices(name: string, extraEnv: Record<string, string> = {}): FileServices {
  const env = { ...uniqueEnv(name), ...extraEnv };
  const s = { env, topics: topicNames(env.KAFKA_TOPIC_PREFIX) } as FileServices;
  beforeAll(async () => {
    [s.api, s.issuer] = await Promise.all([startService('api', env), startService('issuer', env)]);
    s.client = couponClient(s.api.address);
  }, 120_000);
  afterAll(async () => {
    s.client?.close();
    await Promise.all([s.api?.stop(), s.issuer?.stop()]);
    await dropEnvironment(kafka(), s.topics);
  });
  return s;
}
