// A record the broker appends after a rebuild's fence (docs/decisions/0010-rebuild-only-from-settled-facts.md):
// it stalled with the bytes past its publish deadline, so its caller heard UNAVAILABLE and never OK.
// While the gate is armed the issuer's claim drops it (the gate does not hold it). Here Redis loses
// the gate a second time before the issuer reads it, so Redis cannot judge it: the ledger must drop
// it by the fence the issuer passed, or it would take a seq the rebuilt gate hands to a user told OK.
// Real coupon-api and coupon-issuer on a redis-server of this file's own, the record produced with
// the project's registry framing, the ledger and the dead-letter topic read back.
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { EventRegistry } from '../../src/events/registry.ts';
import { gateReserve } from '../../src/gate/gate-scripts.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { startService } from '../support/processes.ts';
import { afterRebuild, callError, createCoupon, decided } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { config, db as newDb, kafka, readTopic, until, waitForCaughtUp } from '../support/stack.ts';

const svc = fileServices('late-append', { API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000' }, { ownRedis: true });
const { env, topics } = svc;
const db = newDb();
afterAll(async () => { await db.destroy(); });

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');

describe('a record appended after a rebuild\'s fence', () => {
  it('is dropped while Redis cannot judge it: the seq it names goes to the user the rebuilt gate told OK', { timeout: 180_000 }, async () => {
    const coupon = await createCoupon(svc.client, 3, { validForMs: 3_600_000 });
    expect((await decided(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'a' }))).seq).toBe(1n);
    // 'late' asks now; its record will reach the partition only after the rebuild's fence.
    const lateRequestedAt = Date.now();
    await svc.redis.restart();

    // The first loss: the gate is rebuilt behind a fence, and 'b' wins seq 2.
    expect((await afterRebuild(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'b' }))).seq).toBe(2n);
    // The rebuilt gate refuses a reservation whose time is before the fence's bound (a call that
    // began before the rebuild): the bound can never drop the record of a caller told OK.
    const r = svc.redis.client();
    expect(await gateReserve(new CouponScripts(r), coupon.id, 'old-clock', lateRequestedAt)).toEqual({ status: 'CLOCK_BEHIND' });
    expect(await r.hget(couponKeys(coupon.id).winners, 'old-clock')).toBeNull();
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
    expect(await readTopic(kafka(), topics.issue, (key) => key === coupon.id, true).then((rs) => rs.filter((m) => m.headers['coupon-fence'] !== undefined).length)).toBeGreaterThan(0);

    // The second loss, before the issuer reads the late record: Redis cannot judge it.
    await svc.issuer.stop();
    await svc.redis.restart();
    const codec = await new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY }).forTopic(topics.issue, CouponIssueRequestedSchema);
    const producer = kafka().producer();
    await producer.connect();
    await producer.send({ topic: topics.issue, acks: -1, messages: [{ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId: 'late', seq: 3n, requestedAt: timestampFromMs(lateRequestedAt), totalQuantity: 3n })) }] });
    await producer.disconnect();
    svc.issuer = await startService('issuer', env);
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
    expect(await ledger(coupon.id)).toEqual([{ user_id: 'a', seq: 1 }, { user_id: 'b', seq: 2 }]);

    // The second rebuild hands seq 3 to the next user, who keeps it; then the coupon is sold out.
    expect((await afterRebuild(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'c' }))).seq).toBe(3n);
    const soldOut = await callError(svc.client.issueCoupon({ couponId: coupon.id, userId: 'd' }));
    expect({ code: soldOut.code, reason: soldOut.reason }).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' });
    await until('c in the ledger', async () => (await ledger(coupon.id)).length === 3 || undefined, 30_000);
    expect(await ledger(coupon.id)).toEqual([{ user_id: 'a', seq: 1 }, { user_id: 'b', seq: 2 }, { user_id: 'c', seq: 3 }]);
    expect(await readTopic(kafka(), topics.issueDlt, (key) => key === coupon.id)).toHaveLength(0);
    expect((await db('coupon_fences').where({ coupon_id: coupon.id }).first<{ stale_before: Date }>()).stale_before.getTime()).toBeGreaterThan(lateRequestedAt);
  });
});
