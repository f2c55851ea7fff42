// A registry that is down when the services start is an outage, not a reason to exit: coupon-api
// and coupon-issuer keep registering their schemas, alert once the outage has lasted five tries,
// start serving as soon as the registry answers, and then sell and issue as usual.
import { afterAll, describe, expect, it } from 'vitest';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { topicNames } from '../../src/events/topics.ts';
import { startService } from '../support/processes.ts';
import { couponClient, createCoupon } from '../support/coupons.ts';
import { cuttableProxy } from '../support/proxy.ts';
import { config, db as newDb, dropEnvironment, kafka, uniqueEnv, until } from '../support/stack.ts';
import { alertWebhook } from '../support/alert-webhook.ts';

const env = uniqueEnv('registry-start');
const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
const db = newDb();

afterAll(async () => {
  await dropEnvironment(kafka(), topics);
  await db.destroy();
});

describe('the schema registry down while the services start', () => {
  it('both services retry registration with an outage alert, start once it answers, and then sell and issue', { timeout: 180_000 }, async () => {
    const registry = new URL(config.SCHEMA_REGISTRY_URL);
    const proxy = await cuttableProxy(Number(registry.port));
    await proxy.cut();
    const viaProxy = new URL(config.SCHEMA_REGISTRY_URL);
    viaProxy.port = String(proxy.port);
    // The alert webhook tells the test when each service has declared the outage.
    const hook = await alertWebhook();
    const { alerts } = hook;
    const serviceEnv = {
      ...env,
      SCHEMA_REGISTRY_URL: viaProxy.toString().replace(/\/$/, ''),
      ALERT_WEBHOOK_URL: hook.url,
    };
    // Neither is awaited yet: they cannot be ready while the registry is cut.
    const apiStarting = startService('api', serviceEnv);
    const issuerStarting = startService('issuer', serviceEnv);
    apiStarting.catch(() => undefined);
    issuerStarting.catch(() => undefined);
    let api: Awaited<typeof apiStarting> | undefined;
    let issuer: Awaited<typeof issuerStarting> | undefined;
    try {
      // The outage alert comes after five failed tries (0.25 + 0.5 + 1 + 2 s of waiting): one from
      // coupon-api for the issue topic, one from coupon-issuer for the first topic it produces to,
      // coupon.v1.issued (the redemption topic's registration then succeeds at its first try).
      await until('an outage alert from each service', () => Promise.resolve(alerts.filter((a) => a.event === 'coupon.dependency.outage').length >= 2 || undefined), 90_000);
      expect(alerts.filter((a) => a.event === 'coupon.dependency.outage').map((a) => a.topic).sort()).toEqual([topics.issue, topics.issued].sort());
      await proxy.restore();
      api = await apiStarting;
      issuer = await issuerStarting;

      for (const service of [api, issuer]) {
        const retries = service.logs.filter((l) => l.msg === 'the schema registry did not answer; registering again');
        expect(retries.length, 'registration was not retried').toBeGreaterThanOrEqual(5);
        const alerts = service.logs.filter((l) => l.msg === 'coupon.dependency.outage');
        expect(alerts, 'one outage alert per producer').toHaveLength(1);
        expect(service.logs.filter((l) => l.msg === 'coupon.dependency.recovered')).toHaveLength(1);
        expect(service.child.exitCode).toBeNull();
      }
      expect(api.logs.find((l) => l.msg === 'coupon.dependency.outage')?.topic).toBe(topics.issue);
      expect(issuer.logs.find((l) => l.msg === 'coupon.dependency.outage')?.topic).toBe(topics.issued);

      const client = couponClient(api.address);
      try {
        const coupon = await createCoupon(client, 1);
        const won = await client.issueCoupon({ couponId: coupon.id, userId: 'first' });
        expect(Number(won.seq)).toBe(1);
        await until('the winner issued', async () => (await client.getUserCoupon({ couponId: coupon.id, userId: 'first' })).userCoupon!.state === UserCouponState.ISSUED);
        const rows = await db('user_coupons').where({ coupon_id: coupon.id }).select('user_id', 'seq');
        expect(rows).toEqual([{ user_id: 'first', seq: 1 }]);
      } finally {
        client.close();
      }
    } finally {
      await Promise.all([api?.stop(), issuer?.stop()]);
      await apiStarting.then((s) => s.stop(), () => undefined);
      await issuerStarting.then((s) => s.stop(), () => undefined);
      await proxy.close();
      hook.close();
    }
  });
});
