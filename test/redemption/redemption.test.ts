// RedeemCoupon and CancelRedemption as the payment service sees them (a @grpc/grpc-js client),
// through the real coupon-api and coupon-issuer, with Redis, the redemption topic and the
// PostgreSQL ledger checked after each scenario (docs/design.md#i5-redemption-at-most-once).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary } from '@bufbuild/protobuf';
import { timestampDate, timestampNow } from '@bufbuild/protobuf/wkt';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponRedemptionChangedSchema, RedemptionTransition } from '../../gen/coupon/events/v1/redemption_pb.js';
import { PaymentResultSchema, PaymentStatus } from '../../gen/payment/v1/payment_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';
import { createPaymentCoupons, type PaymentCoupons } from '../../src/client/payment.ts';
import { EventRegistry } from '../../src/events/registry.ts';
import { topicNames } from '../../src/events/topics.ts';
import { decodeFrame } from '../../src/events/wire-format.ts';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { parseRedemptionValue } from '../../src/redemption/redemption.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { redeem as redeemScript } from '../../src/redemption/redemption-scripts.ts';
import { tokenFor } from '../support/auth.ts';
import { startService } from '../support/processes.ts';
import { fileServices } from '../support/services.ts';
import { callError, couponClient, createCoupon } from '../support/coupons.ts';
import { config, db as newDb, kafka, readTopic, redis as newRedis, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';

// The recovery loops run often; the stale age stays long enough that this file's coupon-api never
// republishes what another test file's processes are still working on (Redis is shared).
// A rebuild after a Redis loss waits PUBLISH_TIMEOUT_MS + 2 s: shorter than the default here.
const svc = fileServices('redemption', { RECOVERY_INTERVAL_MS: '200', RECOVERY_STALE_MS: '10000', PUBLISH_TIMEOUT_MS: '3000' });
const { env, topics } = svc;
const groups = redemptionGroups(env.KAFKA_REDEMPTION_GROUP);
const db = newDb();
const r = newRedis();
const k = kafka();
let payments: PaymentCoupons;

beforeAll(() => { payments = createPaymentCoupons(svc.api.address, { token: () => tokenFor('payment') }); });
afterAll(async () => {
  payments?.close();
  await db.destroy();
  r.disconnect();
});

/** A coupon with one unit per user, each issued (the issuer wrote the ledger and marked Redis). */
async function issuedCoupon(users: string[], opts: { validForMs?: number } = {}): Promise<string> {
  const coupon = await createCoupon(svc.client, users.length, opts);
  await Promise.all(users.map((userId) => svc.client.issueCoupon({ couponId: coupon.id, userId })));
  await until('every user ISSUED', async () => {
    const states = await Promise.all(users.map((userId) => svc.client.getUserCoupon({ couponId: coupon.id, userId })));
    return states.every((s) => s.userCoupon!.state === UserCouponState.ISSUED);
  });
  return coupon.id;
}

/** After Redis lost a coupon, its first call is UNAVAILABLE until nothing published before the loss
 * can still land (PUBLISH_TIMEOUT_MS + 2 s); a caller retries. */
async function onceRebuilt<T>(call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof CouponCallError) || err.reason !== 'BACKEND_UNAVAILABLE' || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

const redeem = (couponId: string, userId: string, orderId: string) => svc.client.redeemCoupon({ couponId, userId, orderId });
const cancel = (couponId: string, userId: string, orderId: string) => svc.client.cancelRedemption({ couponId, userId, orderId });
const refusal = async (p: Promise<unknown>) => {
  const err = await callError(p);
  return { code: err.code, reason: err.reason };
};
const failedPrecondition = (reason: string) => ({ code: grpc.status.FAILED_PRECONDITION, reason });

/** The coupon's events on coupon.v1.redemption, in topic order, as [user, transition, order, version]. */
/**
 * The coupon's redemption events, once each. Delivery is at least once (docs/events.md): a change
 * republished after a slow publish appears twice, and must then be the same event (same version).
 */
async function eventsOf(couponId: string) {
  const records = await readTopic(k, topics.redemption, (key) => key === couponId);
  const events = records
    .map((rec) => fromBinary(CouponRedemptionChangedSchema, decodeFrame(rec.value).payload))
    .map((e) => [e.userId, RedemptionTransition[e.transition], e.orderId, Number(e.version)] as const);
  const byVersion = new Map<string, (typeof events)[number]>();
  for (const e of events) {
    const key = `${e[0]}\u0000${e[3]}`;
    const seen = byVersion.get(key);
    if (seen) expect(e, `a repeated event of ${e[0]} version ${e[3]} differs from the first`).toEqual(seen);
    else byVersion.set(key, e);
  }
  return [...byVersion.values()].map((e) => [...e]);
}

/** Waits for the consumers, then checks that the ledger says what Redis says, and nothing is left unpublished. */
async function expectLedgerMatchesRedis(couponId: string) {
  await waitForCaughtUp(k, groups.paymentResult, topics.paymentResult);
  await waitForCaughtUp(k, groups.ledger, topics.redemption);
  const keys = couponKeys(couponId);
  const [redeemed, cancelled, unpublished] = await Promise.all([r.hgetall(keys.redeem), r.smembers(keys.cancelled), r.zcard(keys.outbox)]);
  expect(unpublished).toBe(0);
  const rows = await db('user_coupons').where({ coupon_id: couponId }).select<{ user_id: string; order_id: string | null; redemption_version: number; redeemed_at: Date | null }[]>('user_id', 'order_id', 'redemption_version', 'redeemed_at');
  const ledger = Object.fromEntries(rows.map((row) => [row.user_id, { orderId: row.order_id, version: row.redemption_version, redeemedAtMs: row.redeemed_at?.getTime() ?? null }]));
  const live = Object.fromEntries(rows.map((row) => {
    const v = parseRedemptionValue(redeemed[row.user_id] ?? '');
    return [row.user_id, { orderId: v?.state === 'R' ? v.orderId : null, version: v?.version ?? 0, redeemedAtMs: v?.state === 'R' ? v.atMs : null }];
  }));
  expect(ledger).toEqual(live);
  const remembered = await db('redemption_cancellations').where({ coupon_id: couponId }).select<{ user_id: string; order_id: string }[]>('user_id', 'order_id');
  expect(remembered.map((c) => `${c.user_id}|${c.order_id}`).sort()).toEqual([...cancelled].sort());
}

describe('RedeemCoupon', () => {
  it('50 concurrent calls with 50 different orders: exactly one wins, the others are COUPON_ALREADY_REDEEMED; the winner repeating gets the same success', async () => {
    const couponId = await issuedCoupon(['alice']);
    const outcomes = await Promise.all(Array.from({ length: 50 }, (_, i) => redeem(couponId, 'alice', `order-${i}`).then(
      (res) => ({ ok: true as const, orderId: res.userCoupon!.orderId, res }),
      (err: { code: number; reason: string }) => ({ ok: false as const, code: err.code, reason: err.reason }))));
    const wins = outcomes.filter((o) => o.ok);
    expect(wins).toHaveLength(1);
    for (const o of outcomes) if (!o.ok) expect({ code: o.code, reason: o.reason }).toEqual(failedPrecondition('COUPON_ALREADY_REDEEMED'));
    const winner = wins[0]!;
    expect(winner.res.userCoupon!.state).toBe(UserCouponState.REDEEMED);

    const repeats = await Promise.all([1, 2, 3].map(() => redeem(couponId, 'alice', winner.orderId)));
    for (const again of repeats) expect(again.userCoupon).toEqual(winner.res.userCoupon);
    const seen = (await svc.client.getUserCoupon({ couponId, userId: 'alice' })).userCoupon!;
    expect({ state: seen.state, orderId: seen.orderId, redeemedAt: seen.redeemedAt }).toEqual({ state: UserCouponState.REDEEMED, orderId: winner.orderId, redeemedAt: winner.res.userCoupon!.redeemedAt });

    expect(await eventsOf(couponId)).toEqual([['alice', 'REDEEMED', winner.orderId, 1]]);
    await expectLedgerMatchesRedis(couponId);
  });

  it('refuses with a reason: unknown coupon, bad ids, never won, still pending, expired', async () => {
    const expiring = createCoupon(svc.client, 1, { validForMs: 2_500 });
    const couponId = await issuedCoupon(['bob']);

    expect(await refusal(redeem('7d0f3c52-4a1e-4d7e-9c55-000000000000', 'bob', 'o1'))).toEqual({ code: grpc.status.NOT_FOUND, reason: 'COUPON_NOT_FOUND' });
    expect(await refusal(redeem('not-a-coupon', 'bob', 'o1'))).toEqual({ code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD' });
    expect(await refusal(cancel('7d0f3c52-4a1e-4d7e-9c55-000000000000', 'bob', 'o1'))).toEqual({ code: grpc.status.NOT_FOUND, reason: 'COUPON_NOT_FOUND' });
    const bad = await callError(redeem(couponId, 'bob', ''));
    expect({ code: bad.code, reason: bad.reason, field: bad.field }).toEqual({ code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD', field: 'order_id' });
    expect((await callError(cancel(couponId, 'b\u0000b', 'o1'))).field).toBe('user_id');
    expect((await callError(redeem(couponId, 'bob', 'x'.repeat(129)))).field).toBe('order_id');

    expect(await refusal(redeem(couponId, 'never-won', 'o1'))).toEqual(failedPrecondition('COUPON_NOT_ISSUED'));
    // Won but not yet in the ledger: the gate holds the seq, the issuer has not written it.
    await r.hset(couponKeys(couponId).winners, 'pending-user', '2');
    expect(await refusal(redeem(couponId, 'pending-user', 'o1'))).toEqual(failedPrecondition('COUPON_NOT_ISSUED'));

    const expired = await expiring;
    await svc.client.issueCoupon({ couponId: expired.id, userId: 'late' });
    await until('ISSUED', async () => (await svc.client.getUserCoupon({ couponId: expired.id, userId: 'late' })).userCoupon!.state === UserCouponState.ISSUED);
    await until('past valid_until', () => Promise.resolve(Date.now() > timestampDate(expired.validUntil!).getTime() + 10), 10_000, 50);
    expect(await refusal(redeem(expired.id, 'late', 'o1'))).toEqual(failedPrecondition('COUPON_EXPIRED'));
    expect(await eventsOf(couponId)).toEqual([]);
    expect(await eventsOf(expired.id)).toEqual([]);
    await expectLedgerMatchesRedis(couponId);
  });
});

describe('CancelRedemption', () => {
  it('makes the coupon usable again, once; refuses another order; and a late redeem of the cancelled order is refused', async () => {
    const couponId = await issuedCoupon(['carol']);
    await redeem(couponId, 'carol', 'o1');
    expect(await refusal(cancel(couponId, 'carol', 'o2'))).toEqual(failedPrecondition('ORDER_MISMATCH'));

    const first = (await cancel(couponId, 'carol', 'o1')).userCoupon!;
    expect({ state: first.state, orderId: first.orderId, redeemedAt: first.redeemedAt }).toEqual({ state: UserCouponState.ISSUED, orderId: '', redeemedAt: undefined });
    const second = (await cancel(couponId, 'carol', 'o1')).userCoupon!;
    expect(second).toEqual(first);

    expect(await refusal(redeem(couponId, 'carol', 'o1'))).toEqual(failedPrecondition('REDEMPTION_CANCELLED'));
    const again = (await redeem(couponId, 'carol', 'o3')).userCoupon!;
    expect({ state: again.state, orderId: again.orderId }).toEqual({ state: UserCouponState.REDEEMED, orderId: 'o3' });
    // A stray repeat of the old compensation (its first answer may have been lost) answers as the
    // coupon is now, and must not release the new order's redemption.
    expect((await cancel(couponId, 'carol', 'o1')).userCoupon!.orderId).toBe('o3');

    // o2's cancel is remembered with version 0: it never changes the coupon's state.
    expect(await eventsOf(couponId)).toEqual([['carol', 'REDEEMED', 'o1', 1], ['carol', 'CANCELLED', 'o2', 0], ['carol', 'CANCELLED', 'o1', 2], ['carol', 'REDEEMED', 'o3', 3]]);
    await expectLedgerMatchesRedis(couponId);
  });

  it('a cancel answered ORDER_MISMATCH is remembered: once the holding order is compensated, a late redeem of the cancelled order is refused, also from the ledger', async () => {
    const couponId = await issuedCoupon(['erin']);
    await redeem(couponId, 'erin', 'order-b');
    expect(await refusal(cancel(couponId, 'erin', 'order-a'))).toEqual(failedPrecondition('ORDER_MISMATCH'));
    expect((await svc.client.getUserCoupon({ couponId, userId: 'erin' })).userCoupon!.orderId).toBe('order-b');
    await cancel(couponId, 'erin', 'order-b');
    expect(await refusal(redeem(couponId, 'erin', 'order-a'))).toEqual(failedPrecondition('REDEMPTION_CANCELLED'));

    // The ledger remembers it too, without the version-0 event touching the coupon's state.
    await waitForCaughtUp(k, groups.ledger, topics.redemption);
    const cancellations = await db('redemption_cancellations').where({ coupon_id: couponId }).orderBy('order_id').select<{ order_id: string }[]>('order_id');
    expect(cancellations.map((c) => c.order_id)).toEqual(['order-a', 'order-b']);
    expect(await db('user_coupons').where({ coupon_id: couponId, user_id: 'erin' }).first<{ order_id: string | null; redemption_version: number }>('order_id', 'redemption_version')).toEqual({ order_id: null, redemption_version: 2 });
    await expectLedgerMatchesRedis(couponId);

    // Redis loses the coupon's redemption state: the ledger still refuses order-a.
    await r.del(...(await r.keys(`coupon:{${couponId}}:*`)));
    expect(await refusal(onceRebuilt(() => redeem(couponId, 'erin', 'order-a')))).toEqual(failedPrecondition('REDEMPTION_CANCELLED'));
    expect((await redeem(couponId, 'erin', 'order-c')).userCoupon!.orderId).toBe('order-c');
  });

  it('a blind cancel of a coupon the order never redeemed is an OK no-op, and that order can never redeem it later', async () => {
    const couponId = await issuedCoupon(['dave']);
    // The payment service timed out on RedeemCoupon and compensated before the redeem arrived.
    const noop = await payments.cancel({ couponId, userId: 'dave' }, 'o-timeout');
    expect(noop.ok && noop.userCoupon.state).toBe(UserCouponState.ISSUED);
    expect(await payments.redeem({ couponId, userId: 'dave' }, 'o-timeout')).toMatchObject({ ok: false, reason: 'REDEMPTION_CANCELLED' });
    const next = await payments.redeem({ couponId, userId: 'dave' }, 'o-next');
    expect(next.ok && next.userCoupon.orderId).toBe('o-next');

    expect(await eventsOf(couponId)).toEqual([['dave', 'CANCELLED', 'o-timeout', 1], ['dave', 'REDEEMED', 'o-next', 2]]);
    await expectLedgerMatchesRedis(couponId);
  });

  it('a blind cancel while the coupon is still pending, recorded by the ledger before the issuer writes the row, leaves Redis and the ledger equal', async () => {
    const coupon = await createCoupon(svc.client, 1);
    // The issuer's bulk insert also bumps the coupon's issued_count: holding that row keeps the
    // insert from committing, while the redemption ledger (which never writes the coupon, and whose
    // foreign-key checks take only a key-share lock) goes on.
    const hold = await db.transaction();
    try {
      await hold.raw('SELECT 1 FROM coupons WHERE id = ? FOR NO KEY UPDATE', [coupon.id]);
      expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'pat' })).seq).toBe(1n);
      // The payment service gave up on a redeem that was refused (not issued yet) and compensates.
      const noop = await payments.cancel({ couponId: coupon.id, userId: 'pat' }, 'o-early');
      expect(noop.ok && noop.userCoupon.state).toBe(UserCouponState.PENDING);
      await until('the ledger remembers the cancelled order', async () =>
        (await db('redemption_cancellations').where({ coupon_id: coupon.id, user_id: 'pat', order_id: 'o-early' })).length === 1);
      expect(await db('user_coupons').where({ coupon_id: coupon.id })).toEqual([]);
    } finally {
      await hold.commit();
    }
    await until('ISSUED', async () => (await svc.client.getUserCoupon({ couponId: coupon.id, userId: 'pat' })).userCoupon!.state === UserCouponState.ISSUED);

    await expectLedgerMatchesRedis(coupon.id);
    expect(await payments.redeem({ couponId: coupon.id, userId: 'pat' }, 'o-early')).toMatchObject({ ok: false, reason: 'REDEMPTION_CANCELLED' });
    const next = await payments.redeem({ couponId: coupon.id, userId: 'pat' }, 'o-next');
    expect(next.ok && next.userCoupon.orderId).toBe('o-next');
    // The cancel changed no coupon state (there was none yet): it carries version 0, as a cancel
    // answered ORDER_MISMATCH does, and the first real change is version 1 in both stores.
    expect(await eventsOf(coupon.id)).toEqual([['pat', 'CANCELLED', 'o-early', 0], ['pat', 'REDEEMED', 'o-next', 1]]);
    await expectLedgerMatchesRedis(coupon.id);
  });
});

describe('a failed payment through Kafka', () => {
  it('PAYMENT_FAILED delivered twice makes the coupon usable again exactly once, and a late duplicate leaves the next order alone', async () => {
    const couponId = await issuedCoupon(['erin']);
    const redeemed = await payments.redeem({ couponId, userId: 'erin' }, 'o-pay');
    expect(redeemed.ok).toBe(true);

    const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
    const codec = await registry.forTopic(topics.paymentResult, PaymentResultSchema);
    const result = (orderId: string, status: PaymentStatus) => ({
      key: orderId,
      value: codec.encode(create(PaymentResultSchema, { orderId, status, coupons: [{ couponId, userId: 'erin' }], occurredAt: timestampNow() })),
    });
    const producer = k.producer();
    await producer.connect();
    try {
      await producer.send({ topic: topics.paymentResult, acks: -1, messages: [result('o-pay', PaymentStatus.FAILED), result('o-pay', PaymentStatus.FAILED)] });
      await waitForCaughtUp(k, groups.paymentResult, topics.paymentResult);
      expect((await svc.client.getUserCoupon({ couponId, userId: 'erin' })).userCoupon!.state).toBe(UserCouponState.ISSUED);
      expect(await payments.redeem({ couponId, userId: 'erin' }, 'o-pay')).toMatchObject({ ok: false, reason: 'REDEMPTION_CANCELLED' });

      const next = await payments.redeem({ couponId, userId: 'erin' }, 'o-next');
      expect(next.ok).toBe(true);
      // The same failure delivered once more, late, and the next order's success: nothing moves.
      await producer.send({ topic: topics.paymentResult, acks: -1, messages: [result('o-pay', PaymentStatus.FAILED), result('o-next', PaymentStatus.SUCCEEDED)] });
      await waitForCaughtUp(k, groups.paymentResult, topics.paymentResult);
    } finally {
      await producer.disconnect();
    }
    const now = (await svc.client.getUserCoupon({ couponId, userId: 'erin' })).userCoupon!;
    expect({ state: now.state, orderId: now.orderId }).toEqual({ state: UserCouponState.REDEEMED, orderId: 'o-next' });

    expect(await eventsOf(couponId)).toEqual([['erin', 'REDEEMED', 'o-pay', 1], ['erin', 'CANCELLED', 'o-pay', 2], ['erin', 'REDEEMED', 'o-next', 3]]);
    await expectLedgerMatchesRedis(couponId);
  });
});

describe('Redis loses redemption state', () => {
  it('RedeemCoupon and CancelRedemption rebuild it from the ledger: issued coupons stay redeemable, redeemed ones stay taken, cancelled orders stay refused', { timeout: 120_000 }, async () => {
    const couponId = await issuedCoupon(['keeper', 'fresh']);
    const held = (await redeem(couponId, 'keeper', 'k1')).userCoupon!;
    await cancel(couponId, 'keeper', 'k1');
    const kept = (await redeem(couponId, 'keeper', 'k2')).userCoupon!;
    const forget = async () => {
      await waitForCaughtUp(k, groups.ledger, topics.redemption);
      await r.del(...Object.values(couponKeys(couponId)));
    };

    await forget();
    const fresh = (await onceRebuilt(() => redeem(couponId, 'fresh', 'f1'))).userCoupon!;
    expect({ state: fresh.state, orderId: fresh.orderId, seq: fresh.seq > 0n }).toEqual({ state: UserCouponState.REDEEMED, orderId: 'f1', seq: true });
    expect((await svc.client.getUserCoupon({ couponId, userId: 'fresh' })).userCoupon).toEqual(fresh);

    await forget();
    expect((await onceRebuilt(() => redeem(couponId, 'keeper', 'k2'))).userCoupon).toEqual(kept);
    expect(await refusal(redeem(couponId, 'keeper', 'k3'))).toEqual(failedPrecondition('COUPON_ALREADY_REDEEMED'));

    // The gate may be rebuilt first (by an IssueCoupon), and it restores issued state only: the
    // redeemed coupon must still be taken, the cancelled order still refused.
    await forget();
    expect((await onceRebuilt(() => svc.client.issueCoupon({ couponId, userId: 'keeper' }))).seq).toBe(held.seq);
    expect(await refusal(onceRebuilt(() => redeem(couponId, 'keeper', 'k3')))).toEqual(failedPrecondition('COUPON_ALREADY_REDEEMED'));
    expect(await refusal(redeem(couponId, 'keeper', 'k1'))).toEqual(failedPrecondition('REDEMPTION_CANCELLED'));

    await forget();
    expect((await onceRebuilt(() => cancel(couponId, 'keeper', 'k2'))).userCoupon!.state).toBe(UserCouponState.ISSUED);
    await forget();
    expect(await refusal(onceRebuilt(() => redeem(couponId, 'keeper', 'k2')))).toEqual(failedPrecondition('REDEMPTION_CANCELLED'));
    expect((await redeem(couponId, 'keeper', 'k4')).userCoupon!.orderId).toBe('k4');

    expect(await eventsOf(couponId)).toEqual([
      ['keeper', 'REDEEMED', 'k1', 1], ['keeper', 'CANCELLED', 'k1', 2], ['keeper', 'REDEEMED', 'k2', 3],
      ['fresh', 'REDEEMED', 'f1', 1], ['keeper', 'CANCELLED', 'k2', 4], ['keeper', 'REDEEMED', 'k4', 5],
    ]);
    await expectLedgerMatchesRedis(couponId);
  });
});

describe('a change whose publish never finished', () => {
  it('stays journaled: a retry of the same order publishes it before answering OK, and the recovery loop publishes an abandoned one', async () => {
    const couponId = await issuedCoupon(['first', 'retrier', 'abandoned']);
    await redeem(couponId, 'first', 'o-first');
    // What a coupon-api that died right after the script leaves behind: the change, journaled, no event.
    const scripts = new CouponScripts(r);
    expect((await redeemScript(scripts, couponId, 'retrier', 'o-retry', Date.now())).status).toBe('REDEEMED');
    // The abandoned change was made 20 s ago: older than RECOVERY_STALE_MS.
    expect((await redeemScript(scripts, couponId, 'abandoned', 'o-gone', Date.now() - 20_000)).status).toBe('REDEEMED');
    expect(await r.zcard(couponKeys(couponId).outbox)).toBe(2);

    const retried = (await redeem(couponId, 'retrier', 'o-retry')).userCoupon!;
    expect(retried.orderId).toBe('o-retry');
    expect(await eventsOf(couponId)).toContainEqual(['retrier', 'REDEEMED', 'o-retry', 1]);

    await until('the recovery loop to publish the abandoned change', async () => (await r.zcard(couponKeys(couponId).outbox)) === 0, 15_000);
    expect((await eventsOf(couponId)).filter((e) => e[0] === 'abandoned')[0]).toEqual(['abandoned', 'REDEEMED', 'o-gone', 1]);
    await expectLedgerMatchesRedis(couponId);
  });
});

describe('Kafka refuses the change', () => {
  it('answers UNAVAILABLE (PUBLISH_FAILED), keeps the change journaled, and the event still reaches the ledger', async () => {
    const couponId = await issuedCoupon(['unlucky', 'warmup']);
    await redeem(couponId, 'warmup', 'o-warm');
    // A second coupon-api whose redemption topic is gone: every publish of it fails.
    const broken = { ...uniqueEnv('redemption-broken'), PUBLISH_TIMEOUT_MS: '3000' };
    const brokenApi = await startService('api', broken);
    const brokenClient = couponClient(brokenApi.address);
    const admin = k.admin();
    await admin.connect();
    try {
      await admin.deleteTopics({ topics: [topicNames(broken.KAFKA_TOPIC_PREFIX).redemption] });
      const err = await callError(brokenClient.redeemCoupon({ couponId, userId: 'unlucky', orderId: 'o-unlucky' }, { timeoutMs: 10_000 }));
      expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'PUBLISH_FAILED' });
      // The change stands, journaled for republishing, and no other order can take the coupon.
      expect(await r.zrangebylex(couponKeys(couponId).outbox, '-', '+')).toEqual([expect.stringMatching(/^unlucky\nR\|o-unlucky\|1\|\d+$/)]);
      expect(await refusal(redeem(couponId, 'unlucky', 'o-other'))).toEqual(failedPrecondition('COUPON_ALREADY_REDEEMED'));
    } finally {
      brokenClient.close();
      await brokenApi.stop();
      await admin.disconnect();
    }
    // The caller retries (here through the healthy coupon-api) and hears OK once the event is acknowledged.
    const retried = (await redeem(couponId, 'unlucky', 'o-unlucky')).userCoupon!;
    expect(retried.orderId).toBe('o-unlucky');
    expect(await eventsOf(couponId)).toContainEqual(['unlucky', 'REDEEMED', 'o-unlucky', 1]);
    await expectLedgerMatchesRedis(couponId);
  });
});
