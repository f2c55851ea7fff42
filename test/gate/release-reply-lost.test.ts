// The release of a failed publish whose reply from Redis is lost (docs/design.md#what-holds-and-what-does-not).
// The release ran: the seq went back to the pool and the next user won it. The first user's record
// reached Kafka all the same (a publish that timed out can still land). If Redis then loses the gate
// before coupon-issuer reads that record, only the ledger's gate_releases row tells the issuer the
// record was released; without it, the record takes the seq and the user told OK is dead-lettered
// SEQ_TAKEN. coupon-api repeats a release that got no answer until Redis answers, and records it.
// Real coupon-api (one with FAILPOINT=lose-release-reply: its publish stalls past
// PUBLISH_TIMEOUT_MS, and the reply of the release that follows is dropped after Redis ran it) and
// coupon-issuer on a redis-server of this file's own; the late record produced with the project's
// registry framing; the ledger and the dead-letter topic read back.
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { EventRegistry } from '../../src/events/registry.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { afterRebuild, callError, couponClient, createCoupon } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { config, db as newDb, kafka, readTopic, until, waitForCaughtUp } from '../support/stack.ts';

const svc = fileServices('release-lost', { API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '1000' }, { ownRedis: true, issuer: false });
const { env, topics } = svc;
const db = newDb();
let lossy: ServiceProcess | undefined;
afterAll(async () => { await lossy?.stop(); await db.destroy(); });

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');

describe('a release whose reply from Redis is lost', () => {
  it('is recorded in the ledger all the same: a second Redis loss cannot give its seq to the released record', { timeout: 180_000 }, async () => {
    lossy = await startService('api', { ...env, FAILPOINT: 'lose-release-reply' });
    const lossyClient = couponClient(lossy.address);
    try {
      const coupon = await createCoupon(svc.client, 1, { validForMs: 3_600_000 });
      const r = svc.redis.client();
      // 'a' reserves seq 1 through the lossy coupon-api; its reservation time is read from Redis
      // while the publish stalls.
      let requestedAt: number | undefined;
      const watching = until("a's reservation", async () => {
        const score = await r.zscore(couponKeys(coupon.id).pending, 'a');
        if (score !== null) requestedAt = Number(score);
        return requestedAt;
      }, 10_000, 10);
      const refused = await callError(lossyClient.issueCoupon({ couponId: coupon.id, userId: 'a' }));
      await watching;
      expect({ code: refused.code, reason: refused.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      // The release ran in Redis: seq 1 is free again, and 'a' holds nothing.
      expect(await r.hget(couponKeys(coupon.id).winners, 'a')).toBeNull();
      expect(await r.lrange(couponKeys(coupon.id).free, 0, -1)).toEqual(['1']);
      // ... and the ledger knows it.
      await until('the release recorded', async () => Number((await db('gate_releases').where({ coupon_id: coupon.id }).count<{ n: string | number }[]>({ n: '*' }))[0]!.n) === 1 || undefined, 10_000);
      const row = await db('gate_releases').where({ coupon_id: coupon.id }).first<{ user_id: string; seq: string; requested_at: Date }>('user_id', 'seq', 'requested_at');
      expect({ user: row.user_id, seq: Number(row.seq), at: row.requested_at.getTime() }).toEqual({ user: 'a', seq: 1, at: requestedAt });

      // 'a''s record lands after all; 'b' wins seq 1 after it and is told OK.
      const codec = await new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY }).forTopic(topics.issue, CouponIssueRequestedSchema);
      const producer = kafka().producer();
      await producer.connect();
      await producer.send({ topic: topics.issue, acks: -1, messages: [{ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId: 'a', seq: 1n, requestedAt: timestampFromMs(requestedAt!), totalQuantity: 1n })) }] });
      await producer.disconnect();
      expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'b' })).seq).toBe(1n);

      // Redis loses the gate before coupon-issuer reads either record.
      await svc.redis.restart();
      svc.issuer = await startService('issuer', env);
      await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
      expect(await ledger(coupon.id)).toEqual([{ user_id: 'b', seq: 1 }]);
      expect(await readTopic(kafka(), topics.issueDlt, (key) => key === coupon.id)).toHaveLength(0);
      // The rebuilt gate gives 'b' their seq, and 'a' hears the coupon is sold out.
      const b = await afterRebuild(() => svc.client.getUserCoupon({ couponId: coupon.id, userId: 'b' }));
      expect(b.userCoupon!.seq).toBe(1n);
      const late = await callError(afterRebuild(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'a' })));
      expect({ code: late.code, reason: late.reason }).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' });
    } finally {
      lossyClient.close();
    }
  });
});
