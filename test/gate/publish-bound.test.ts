// The rebuild after a Redis loss waits PUBLISH_TIMEOUT_MS + 2 s from when the loss was noticed,
// trusting that no record reaches Kafka later than PUBLISH_TIMEOUT_MS after its reservation was
// made. That bound must count from the reservation, not from whenever the process got round to
// sending: a coupon-api that pauses between the two (a GC pause, a blocked event loop) could
// otherwise land a record long after a rebuild gave its seq to someone else. Here coupon-api pauses
// PUBLISH_TIMEOUT_MS + 0.5 s after each reservation (FAILPOINT=stall-after-reserve): the record is
// never sent, the slot is released, and the caller hears PUBLISH_FAILED. The same pause lets Redis
// lose the gate before the publish fails: the release is then recorded in the ledger all the same.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CouponCallError } from '../../src/client/grpc.ts';
import { topicNames } from '../../src/events/topics.ts';
import { allCouponKeys, couponKeys } from '../../src/store/keys.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { db as newDb, kafka, readTopic, redis as newRedis, uniqueEnv, until } from '../support/stack.ts';

const env = { ...uniqueEnv('publish-bound'), PUBLISH_TIMEOUT_MS: '1000', FAILPOINT: 'stall-after-reserve', API_WORKERS: '1' };
const r = newRedis();
const db = newDb();
let api: ServiceProcess;
let client: CouponClient;
beforeAll(async () => {
  api = await startService('api', env);
  client = couponClient(api.address);
});
afterAll(async () => { client?.close(); await api?.stop(); r.disconnect(); await db.destroy(); });

describe('a publish that would start after its reservation\'s publish bound', () => {
  it('is never sent: the slot is released and the caller hears PUBLISH_FAILED', { timeout: 60_000 }, async () => {
    const coupon = await createCoupon(client, 1);
    const answer = await client.issueCoupon({ couponId: coupon.id, userId: 'paused' }, { timeoutMs: 20_000 }).then(() => 'OK', (err: unknown) => err);
    expect(answer).toBeInstanceOf(CouponCallError);
    expect((answer as CouponCallError).reason).toBe('PUBLISH_FAILED');
    // Nothing on the topic, now or later (the issuer is not running: the topic is read directly).
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await readTopic(kafka(), topicNames(env.KAFKA_TOPIC_PREFIX).issue, (key) => key === coupon.id)).toEqual([]);
    // The slot is back in the pool, and nobody holds it.
    const k = couponKeys(coupon.id);
    expect(await r.hlen(k.winners)).toBe(0);
    expect(await r.lrange(k.free, 0, -1)).toEqual(['1']);
    expect(await r.zcard(k.pending)).toBe(0);
  });
});

describe('a publish that fails after Redis lost the gate', () => {
  it('records its release in the ledger, so the record is dropped if it lands while the gate is gone', { timeout: 60_000 }, async () => {
    const coupon = await createCoupon(client, 1);
    const k = couponKeys(coupon.id);
    const answered = client.issueCoupon({ couponId: coupon.id, userId: 'unlucky' }, { timeoutMs: 20_000 }).then(() => 'OK', (err: unknown) => err);
    // Reserved; while coupon-api pauses before publishing, Redis loses the coupon's gate.
    await until('reserved', async () => (await r.zscore(k.pending, 'unlucky')) !== null, 10_000, 10);
    const requestedAt = Number(await r.zscore(k.pending, 'unlucky'));
    await r.del(...allCouponKeys(coupon.id));
    const answer = await answered;
    expect(answer).toBeInstanceOf(CouponCallError);
    expect((answer as CouponCallError).reason).toBe('BACKEND_UNAVAILABLE');
    const rows = await db('gate_releases').where({ coupon_id: coupon.id }).select<{ user_id: string; seq: string; requested_at: Date }[]>('user_id', 'seq', 'requested_at');
    expect(rows.map((row) => ({ userId: row.user_id, seq: Number(row.seq), requestedAtMs: row.requested_at.getTime() }))).toEqual([{ userId: 'unlucky', seq: 1, requestedAtMs: requestedAt }]);
  });
});
