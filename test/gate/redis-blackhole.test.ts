// A Redis that silently drops packets: no reset, no refusal, the connection stays open and nothing
// answers. Without a command timeout every Redis call would wait for TCP to give up (minutes):
// IssueCoupon would hang to the caller's deadline and the issuer's batch would hang without an
// alert. With REDIS_COMMAND_TIMEOUT_MS it is an outage like any other: UNAVAILABLE
// BACKEND_UNAVAILABLE within seconds, the issuer retrying (and alerting) until the path heals, and
// every user told OK issued (I3), nothing dead-lettered.
import { describe, expect, it } from 'vitest';
import { CouponCallError } from '../../src/client/grpc.ts';
import { topicNames } from '../../src/events/topics.ts';
import { scrape, sumOf } from '../../src/metrics/text-format.ts';
import { startService } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { cuttableProxy } from '../support/proxy.ts';
import { startOwnRedis } from '../support/redis-server.ts';
import { db as newDb, kafka, readTopic, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';

type Answer = { ok: true; seq: number } | { ok: false; code: number; reason: string };
async function issue(client: CouponClient, couponId: string, userId: string): Promise<Answer> {
  try {
    // Well past REDIS_COMMAND_TIMEOUT_MS: the answer comes from the service, not from this deadline.
    const res = await client.issueCoupon({ couponId, userId }, { timeoutMs: 10_000 });
    return { ok: true, seq: Number(res.seq) };
  } catch (err) {
    if (!(err instanceof CouponCallError)) throw err;
    return { ok: false, code: err.code, reason: err.reason };
  }
}

describe('Redis silently dropping packets', () => {
  it('is an outage: IssueCoupon answers UNAVAILABLE, the issuer retries with an alert, and every user told OK is issued once the path heals', { timeout: 180_000 }, async () => {
    const redis = await startOwnRedis(['--maxmemory', '64mb', '--maxmemory-policy', 'noeviction']);
    const proxy = await cuttableProxy(redis.port);
    const env = {
      ...uniqueEnv('redis-blackhole'),
      API_WORKERS: '1',
      REDIS_URL: `redis://127.0.0.1:${proxy.port}/0`,
      REDIS_COMMAND_TIMEOUT_MS: '2000',
      ISSUE_BACKOFF_MS: '100',
      ISSUE_BACKOFF_MAX_MS: '1000',
      RECOVERY_INTERVAL_MS: '500',
      RECOVERY_STALE_MS: '6000',
    };
    const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
    const db = newDb();
    const api = await startService('api', env);
    const issuer = await startService('issuer', env);
    const client = couponClient(api.address);
    const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');
    const told = new Map<string, number>();
    try {
      const coupon = await createCoupon(client, 20);
      // Records the issuer has yet to take when Redis goes dark: it is paused while they are won.
      issuer.child.kill('SIGSTOP');
      for (let i = 0; i < 5; i++) {
        const a = await issue(client, coupon.id, `before-${i}`);
        expect(a).toMatchObject({ ok: true });
        if (a.ok) told.set(`before-${i}`, a.seq);
      }

      proxy.blackhole();
      issuer.child.kill('SIGCONT');
      const during = await Promise.all(['during-0', 'during-1'].map((userId) => issue(client, coupon.id, userId)));
      expect(during).toEqual([{ ok: false, code: 14, reason: 'BACKEND_UNAVAILABLE' }, { ok: false, code: 14, reason: 'BACKEND_UNAVAILABLE' }]);
      // The issuer's claim gets no answer either: retried as an outage, and alerted.
      const alert = await issuer.waitForLog('coupon.dependency.outage', 60_000);
      expect(alert.topic).toBe(topics.issue);
      expect(String(alert.error)).toContain('Command timed out');
      const apiMetrics = await scrape(api.metricsUrl, 5_000);
      expect(sumOf(apiMetrics, 'coupon_dependency_up', { dependency: 'redis' })).toBe(0);
      const issuerMetrics = await scrape(issuer.metricsUrl, 5_000);
      expect(sumOf(issuerMetrics, 'coupon_consumer_outage', { topic: topics.issue })).toBe(1);
      expect(sumOf(issuerMetrics, 'coupon_dependency_up', { dependency: 'redis' })).toBe(0);
      expect(await ledger(coupon.id)).toEqual([]);

      proxy.lift();
      // Those told UNAVAILABLE retry until they hear a decision; their first attempts may have
      // reached Redis late (a timed-out write can still land), and the retry answers from that.
      for (const userId of ['during-0', 'during-1', 'after-0']) {
        const a = await until(`${userId} decided`, async () => {
          const answer = await issue(client, coupon.id, userId);
          return answer.ok || answer.reason !== 'BACKEND_UNAVAILABLE' ? answer : undefined;
        }, 60_000, 250);
        expect(a).toMatchObject({ ok: true });
        if (a.ok) told.set(userId, a.seq);
      }
      await issuer.waitForLog('coupon.dependency.recovered', 30_000);
      await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue, 60_000);
      await until('a row for every user told OK', async () => (await ledger(coupon.id)).length >= told.size || undefined, 30_000);
      const rows = await ledger(coupon.id);
      expect(new Map(rows.map((r) => [r.user_id, r.seq]))).toEqual(told);
      expect(new Set(rows.map((r) => r.seq)).size).toBe(rows.length);
      expect(await readTopic(kafka(), topics.issueDlt)).toHaveLength(0);
      expect(sumOf(await scrape(issuer.metricsUrl, 5_000), 'coupon_consumer_outage', { topic: topics.issue })).toBe(0);
      await until('redis reachable again', async () => sumOf(await scrape(api.metricsUrl, 5_000), 'coupon_dependency_up', { dependency: 'redis' }) === 1 || undefined, 20_000);
    } finally {
      issuer.child.kill('SIGCONT');
      client.close();
      proxy.lift();
      await Promise.all([api.stop(), issuer.stop()]);
      await proxy.close();
      await redis.stop();
      await db.destroy();
    }
  });
});
