// The issuer judges every record on its own. A user's stale record (its publish
// "failed" but landed, and the slot was released) and the same user's live record (the retry the
// service asked for) can be read in one batch; the live one must be issued.
import { afterAll, describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { EventRegistry } from '../../src/events/registry.ts';
import { topicNames } from '../../src/events/topics.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateRelease, gateReserve } from '../../src/gate/gate-scripts.ts';
import { startService } from '../support/processes.ts';
import { couponClient, createCoupon } from '../support/coupons.ts';
import { config, db as newDb, kafka, readTopic, redis as newRedis, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';

const db = newDb();
const r = newRedis();
afterAll(async () => { await db.destroy(); r.disconnect(); });

describe('a user whose first publish timed out but landed, and who retried as told', () => {
  it('is issued the seq of the retry that heard OK; the stale record is dropped and the coupon sells out exactly', { timeout: 120_000 }, async () => {
    const env = uniqueEnv('live-record');
    const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
    const api = await startService('api', env);
    const client = couponClient(api.address);
    let issuer: Awaited<ReturnType<typeof startService>> | undefined;
    try {
      const coupon = await createCoupon(client, 5);
      // No issuer yet: both of U1's records wait on the topic and are read in one batch.
      const scripts = new CouponScripts(r);
      const reservedAt = Date.now();
      const first = await gateReserve(scripts, coupon.id, 'u1', reservedAt);
      expect(first).toMatchObject({ status: 'RESERVED', seq: 1 });
      // The publish timed out, the gate released seq 1, U1 heard PUBLISH_FAILED ...
      expect(await gateRelease(scripts, coupon.id, 'u1', 1, reservedAt)).toBe('RELEASED');
      // ... but the record reached the broker after all.
      const codec = await new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY }).forTopic(topics.issue, CouponIssueRequestedSchema);
      const producer = kafka().producer();
      await producer.connect();
      await producer.send({ topic: topics.issue, acks: -1, messages: [{ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId: 'u1', seq: 1n, requestedAt: timestampNow(), totalQuantity: 5n })) }] });
      await producer.disconnect();
      // Another user takes the released seq 1; U1 retries as told and wins seq 2.
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'u2' })).seq).toBe(1n);
      const retried = await client.issueCoupon({ couponId: coupon.id, userId: 'u1' });
      expect(retried.seq).toBe(2n);
      for (const u of ['u3', 'u4', 'u5']) await client.issueCoupon({ couponId: coupon.id, userId: u });

      issuer = await startService('issuer', env);
      await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
      await until('5 rows', async () => (await db('user_coupons').where({ coupon_id: coupon.id })).length === 5, 30_000);
      const rows = await db('user_coupons').where({ coupon_id: coupon.id }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');
      expect(rows).toEqual([{ user_id: 'u2', seq: 1 }, { user_id: 'u1', seq: 2 }, { user_id: 'u3', seq: 3 }, { user_id: 'u4', seq: 4 }, { user_id: 'u5', seq: 5 }]);
      const u1 = await client.getUserCoupon({ couponId: coupon.id, userId: 'u1' });
      expect(u1.userCoupon).toMatchObject({ seq: 2n, state: UserCouponState.ISSUED });
      expect(await readTopic(kafka(), topics.issueDlt, (key) => key === coupon.id)).toHaveLength(0);
    } finally {
      client.close();
      await Promise.all([api.stop(), issuer?.stop()]);
    }
  });
});
