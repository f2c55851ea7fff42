// A coupon id is a UUID in any letter case, and every spelling names one coupon: one gate, one
// redemption state, one set of Redis keys, answers in the lower-case spelling. Ids that are not
// UUIDs are refused. Real coupon-api and coupon-issuer, a @grpc/grpc-js client, and the stored state.
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { PaymentResultSchema, PaymentStatus } from '../../gen/payment/v1/payment_pb.js';
import { EventRegistry } from '../../src/events/registry.ts';
import { topicNames } from '../../src/events/topics.ts';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { fileServices } from '../support/services.ts';
import { callError, createCoupon } from '../support/coupons.ts';
import { config, db as newDb, kafka, redis as newRedis, until, waitForCaughtUp } from '../support/stack.ts';

const svc = fileServices('canonical-ids');
const { env } = svc;
// User ids of this run: the ledger is shared with every other run.
const run = env.KAFKA_CLIENT_ID.slice(-8);
const [ana, ben, cho, dee, eve] = ['ana', 'ben', 'cho', 'dee', 'eve'].map((name) => `${name}-${run}`) as [string, string, string, string, string];
const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
const db = newDb();
const r = newRedis();
const k = kafka();

afterAll(async () => {
  await db.destroy();
  r.disconnect();
});

/** Mixed case: every other hex letter upper-cased. */
const mixed = (id: string) => [...id].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join('');
const spellings = (id: string) => ({ upper: id.toUpperCase(), mixed: mixed(id) });

/** Every Redis key that holds one of the coupon's spellings in its hash tag. */
async function keysOf(id: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', 'coupon:{*', 'COUNT', 10_000);
    cursor = next;
    found.push(...keys.filter((key) => key.slice(8, 8 + id.length).toLowerCase() === id));
  } while (cursor !== '0');
  return found;
}

const refusal = async (p: Promise<unknown>) => {
  const err = await callError(p);
  return { code: err.code, reason: err.reason, ...(err.field ? { field: err.field } : {}) };
};

describe('a coupon id in another letter case', () => {
  it('every RPC answers as for the lower-case id, and Redis keeps one spelling', async () => {
    const coupon = await createCoupon(svc.client, 2);
    const id = coupon.id;
    expect(id).toBe(id.toLowerCase());
    const { upper, mixed: mixedId } = spellings(id);

    // The gate: one gate whatever the spelling, so two units go to two users and then it is sold out.
    const first = await svc.client.issueCoupon({ couponId: id, userId: ana });
    expect(first.seq).toBe(1n);
    expect(await svc.client.issueCoupon({ couponId: upper, userId: ana })).toMatchObject({ seq: 1n });
    expect(await svc.client.issueCoupon({ couponId: mixedId, userId: ana })).toMatchObject({ seq: 1n });
    expect((await svc.client.issueCoupon({ couponId: upper, userId: ben })).seq).toBe(2n);
    expect(await refusal(svc.client.issueCoupon({ couponId: mixedId, userId: cho }))).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT'});
    expect(await refusal(svc.client.issueCoupon({ couponId: id, userId: cho }))).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT'});

    // Reads: the same answer, carrying the lower-case id.
    await until('both users ISSUED', async () => {
      const states = await Promise.all([ana, ben].map((userId) => svc.client.getUserCoupon({ couponId: id, userId })));
      return states.every((s) => s.userCoupon!.state === UserCouponState.ISSUED);
    });
    const canonicalCoupon = (await svc.client.getCoupon({ couponId: id })).coupon!;
    for (const spelling of [upper, mixedId]) {
      expect((await svc.client.getCoupon({ couponId: spelling })).coupon).toEqual(canonicalCoupon);
      for (const userId of [ana, ben, cho]) {
        expect((await svc.client.getUserCoupon({ couponId: spelling, userId })).userCoupon).toEqual((await svc.client.getUserCoupon({ couponId: id, userId })).userCoupon);
      }
    }
    expect(canonicalCoupon).toMatchObject({ id, acceptedCount: 2n, issuedCount: 2n, remaining: 0n });
    expect((await svc.client.listUserCoupons({ userId: ben })).userCoupons.map((c) => c.couponId)).toEqual([id]);

    // Redemption: one coupon, one order, whatever the spelling (this redeemed twice before).
    const redeemed = (await svc.client.redeemCoupon({ couponId: upper, userId: ana, orderId: 'order-A' })).userCoupon!;
    expect(redeemed).toMatchObject({ couponId: id, state: UserCouponState.REDEEMED, orderId: 'order-A' });
    expect(await refusal(svc.client.redeemCoupon({ couponId: id, userId: ana, orderId: 'order-B' }))).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_ALREADY_REDEEMED'});
    expect(await refusal(svc.client.redeemCoupon({ couponId: mixedId, userId: ana, orderId: 'order-B' }))).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_ALREADY_REDEEMED'});
    expect((await svc.client.redeemCoupon({ couponId: mixedId, userId: ana, orderId: 'order-A' })).userCoupon).toEqual(redeemed);
    expect(await refusal(svc.client.cancelRedemption({ couponId: upper, userId: ana, orderId: 'order-B' }))).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'ORDER_MISMATCH'});
    const cancelled = (await svc.client.cancelRedemption({ couponId: mixedId, userId: ana, orderId: 'order-A' })).userCoupon!;
    expect(cancelled).toMatchObject({ couponId: id, state: UserCouponState.ISSUED, orderId: '' });
    expect((await svc.client.cancelRedemption({ couponId: upper, userId: ana, orderId: 'order-A' })).userCoupon).toEqual(cancelled);
    expect((await svc.client.redeemCoupon({ couponId: upper, userId: ana, orderId: 'order-C' })).userCoupon).toMatchObject({ couponId: id, state: UserCouponState.REDEEMED, orderId: 'order-C' });

    // Stored state: Redis holds the coupon under its lower-case id only, and so does the ledger.
    const keys = await keysOf(id);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.filter((key) => !key.startsWith(`coupon:{${id}}:`))).toEqual([]);
    expect(await r.hgetall(`coupon:{${id}}:winners`)).toEqual({ [ana]: '1', [ben]: '2' });
    await until('the ledger to hold order-C', async () => (await db('user_coupons').where({ coupon_id: id, user_id: ana }).first<{ order_id: string | null }>())?.order_id === 'order-C');
    const rows = await db('user_coupons').where({ coupon_id: id }).orderBy('user_id').select<{ coupon_id: string; user_id: string; seq: number }[]>('coupon_id', 'user_id', 'seq');
    expect(rows).toEqual([{ coupon_id: id, user_id: ana, seq: 1 }, { coupon_id: id, user_id: ben, seq: 2 }]);
  });

  it('redeeming in upper case and then in lower case for another order is refused (one order per coupon)', async () => {
    const coupon = await createCoupon(svc.client, 1);
    await svc.client.issueCoupon({ couponId: coupon.id, userId: eve });
    await until('eve ISSUED', async () => (await svc.client.getUserCoupon({ couponId: coupon.id, userId: eve })).userCoupon!.state === UserCouponState.ISSUED);
    expect((await svc.client.redeemCoupon({ couponId: coupon.id.toUpperCase(), userId: eve, orderId: 'order-A' })).userCoupon).toMatchObject({ couponId: coupon.id, orderId: 'order-A' });
    expect(await refusal(svc.client.redeemCoupon({ couponId: coupon.id, userId: eve, orderId: 'order-B' }))).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_ALREADY_REDEEMED'});
    await until('the ledger to hold order-A', async () => (await db('user_coupons').where({ coupon_id: coupon.id, user_id: eve }).first<{ order_id: string | null }>())?.order_id === 'order-A');
  });

  it('a failed payment naming the coupon in upper case compensates the lower-case coupon', async () => {
    const coupon = await createCoupon(svc.client, 1);
    await svc.client.issueCoupon({ couponId: coupon.id, userId: dee });
    await until('dee ISSUED', async () => (await svc.client.getUserCoupon({ couponId: coupon.id, userId: dee })).userCoupon!.state === UserCouponState.ISSUED);
    await svc.client.redeemCoupon({ couponId: coupon.id, userId: dee, orderId: 'pay-1' });

    const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
    const codec = await registry.forTopic(topics.paymentResult, PaymentResultSchema);
    const producer = k.producer();
    await producer.connect();
    try {
      await producer.send({ topic: topics.paymentResult, acks: -1, messages: [{
        key: 'pay-1',
        value: codec.encode(create(PaymentResultSchema, { orderId: 'pay-1', status: PaymentStatus.FAILED, coupons: [{ couponId: coupon.id.toUpperCase(), userId: dee }], occurredAt: timestampNow() })),
      }] });
    } finally {
      await producer.disconnect();
    }
    await waitForCaughtUp(k, redemptionGroups(env.KAFKA_REDEMPTION_GROUP).paymentResult, topics.paymentResult);
    expect((await svc.client.getUserCoupon({ couponId: coupon.id, userId: dee })).userCoupon).toMatchObject({ couponId: coupon.id, state: UserCouponState.ISSUED, orderId: '' });
    expect(await keysOf(coupon.id).then((keys) => keys.filter((key) => !key.startsWith(`coupon:{${coupon.id}}:`)))).toEqual([]);
  });
});

describe('a coupon id that is not a UUID', () => {
  const valid = '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70';
  it.each([
    ['a word', 'not-a-uuid'],
    ['no hyphens', valid.replaceAll('-', '')],
    ['a URN', `urn:uuid:${valid}`],
    ['one digit short', valid.slice(0, -1)],
    ['a non-hex letter', `${valid.slice(0, -1)}g`],
    ['full-width digits', valid.replace('3', '\uff13')],
  ])('(%s) is INVALID_ARGUMENT INVALID_FIELD on every RPC, writing nothing', async (_name, couponId) => {
    const invalid = { code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD', field: 'coupon_id' };
    expect(await refusal(svc.client.issueCoupon({ couponId, userId: 'u' }))).toEqual(invalid);
    expect(await refusal(svc.client.getCoupon({ couponId }))).toEqual(invalid);
    expect(await refusal(svc.client.getUserCoupon({ couponId, userId: 'u' }))).toEqual(invalid);
    expect(await refusal(svc.client.redeemCoupon({ couponId, userId: 'u', orderId: 'o' }))).toEqual(invalid);
    expect(await refusal(svc.client.cancelRedemption({ couponId, userId: 'u', orderId: 'o' }))).toEqual(invalid);
    expect(await r.keys(`coupon:{${couponId}}*`)).toEqual([]);
  });
});

describe('user ids and order ids', () => {
  it('are exact strings: two spellings are two users', async () => {
    const coupon = await createCoupon(svc.client, 3);
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'Bob' })).seq).toBe(1n);
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'bob' })).seq).toBe(2n);
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'Bob' })).seq).toBe(1n);
    expect(await r.hgetall(`coupon:{${coupon.id}}:winners`)).toEqual({ Bob: '1', bob: '2' });
  });
});
