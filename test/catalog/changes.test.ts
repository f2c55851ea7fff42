// Operating a live sale (docs/operations.md#change-a-live-sale): PauseCoupon, ResumeCoupon,
// CloseCoupon and UpdateCoupon against the real coupon-api (2 workers) and coupon-issuer, through
// @grpc/grpc-js. Each answer is compared with what it must be, and so is the stored state: the
// ledger row, the audit table, and the gate's meta in Redis.
import * as grpc from '@grpc/grpc-js';
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import { afterAll, describe, expect, it } from 'vitest';
import { CouponStatus } from '../../gen/coupon/v1/coupon_pb.js';
import { topicNames } from '../../src/events/topics.ts';
import { couponKeys } from '../../src/store/keys.ts';
import type { CouponRow } from '../../src/store/coupons.ts';
import { bufBin, run, startService } from '../support/processes.ts';
import { fileServices } from '../support/services.ts';
import { tokenFor } from '../support/auth.ts';
import { afterRebuild, callError, couponClient, createCoupon, decided, type CouponClient } from '../support/coupons.ts';
import { startOwnRedis } from '../support/redis-server.ts';
import { db as newDb, dropEnvironment, kafka, redis as newRedis, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';

const svc = fileServices('coupon-changes', { API_WORKERS: '2' });
const { env, topics } = svc;
const db = newDb();
const redis = newRedis();
afterAll(async () => { await Promise.all([db.destroy(), redis.quit()]); });

const refusal = async (p: Promise<unknown>) => {
  const err = await callError(p);
  return { code: err.code, reason: err.reason };
};
interface ChangeRow { action: string; changed_by: string; before: Record<string, unknown>; after: Record<string, unknown> }
const changes = (couponId: string): Promise<ChangeRow[]> => db('coupon_changes').where({ coupon_id: couponId }).orderBy('id').select('action', 'changed_by', 'before', 'after');
const ledger = (couponId: string): Promise<CouponRow | undefined> => db<CouponRow>('coupons').where({ id: couponId }).first();
const issueAll = (couponId: string, users: string[]) => Promise.all(users.map((userId) => svc.client.issueCoupon({ couponId, userId }).then(
  (res) => ({ userId, seq: Number(res.seq) }),
  (err: { code: number; reason?: string }) => ({ userId, code: err.code, reason: err.reason }),
)));

describe('PauseCoupon and ResumeCoupon', () => {
  it('a paused coupon takes no new winner, a winner still hears their seq, and resuming hands out the next seq', async () => {
    const coupon = await createCoupon(svc.client, 10);
    for (const [i, userId] of ['a', 'b', 'c'].entries()) expect((await svc.client.issueCoupon({ couponId: coupon.id, userId })).seq).toBe(BigInt(i + 1));

    // In any letter case, as every RPC takes ids.
    const paused = (await svc.client.pauseCoupon({ couponId: coupon.id.toUpperCase() })).coupon!;
    expect(paused.id).toBe(coupon.id);
    expect(paused.status).toBe(CouponStatus.PAUSED);
    expect(paused.acceptedCount).toBe(3n);
    expect(paused.pausedAt).toBeDefined();
    expect(await redis.hget(couponKeys(coupon.id).meta, 'paused')).toBe('1');
    expect((await ledger(coupon.id))!.paused_at).not.toBeNull();

    // Every worker: several separate connections, so the calls land on both.
    const clients = Array.from({ length: 4 }, () => couponClient(svc.api.address, true));
    try {
      for (const [i, c] of clients.entries()) {
        expect(await refusal(c.issueCoupon({ couponId: coupon.id, userId: `new-${i}` }))).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_PAUSED' });
        expect((await c.issueCoupon({ couponId: coupon.id, userId: 'b' })).seq).toBe(2n);
      }
    } finally {
      for (const c of clients) c.close();
    }
    expect((await svc.client.getCoupon({ couponId: coupon.id })).coupon).toMatchObject({ status: CouponStatus.PAUSED, acceptedCount: 3n, remaining: 7n });

    // Pausing again changes nothing and records nothing.
    expect((await svc.client.pauseCoupon({ couponId: coupon.id })).coupon!.pausedAt).toEqual(paused.pausedAt);

    const resumed = (await svc.client.resumeCoupon({ couponId: coupon.id })).coupon!;
    expect(resumed.status).toBe(CouponStatus.OPEN);
    expect(resumed.pausedAt).toBeUndefined();
    expect(await redis.hget(couponKeys(coupon.id).meta, 'paused')).toBeNull();
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'd' })).seq).toBe(4n);

    const recorded = await changes(coupon.id);
    expect(recorded.map((c) => [c.action, c.changed_by])).toEqual([['PAUSE', 'test-operator'], ['RESUME', 'test-operator']]);
    expect(recorded[0]!.before.paused_at).toBeNull();
    expect(new Date(recorded[0]!.after.paused_at as string).getTime()).toBe(timestampDate(paused.pausedAt!).getTime());
    expect(recorded[1]!.after.paused_at).toBeNull();
    expect(svc.api.logs.filter((l) => l.msg === 'audit' && l.coupon_id === coupon.id).map((l) => l.procedure).sort()).toEqual(['CreateCoupon', 'PauseCoupon', 'PauseCoupon', 'ResumeCoupon']);
  });
});

describe('CloseCoupon', () => {
  it('ends the sale now: new users hear COUPON_CLOSED, winners keep their seq, and the ledger holds the new closes_at', async () => {
    const coupon = await createCoupon(svc.client, 10, { closesInMs: 3_600_000, validForMs: 7_200_000 });
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'early' })).seq).toBe(1n);
    const before = Date.now();
    const closed = (await svc.client.closeCoupon({ couponId: coupon.id })).coupon!;
    const closesAt = timestampDate(closed.closesAt!).getTime();
    expect(closesAt).toBeGreaterThanOrEqual(before - 1);
    expect(closesAt).toBeLessThanOrEqual(Date.now());
    expect(closed.status).toBe(CouponStatus.CLOSED);
    expect(await refusal(svc.client.issueCoupon({ couponId: coupon.id, userId: 'late' }))).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_CLOSED' });
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'early' })).seq).toBe(1n);
    expect(Number(await redis.hget(couponKeys(coupon.id).meta, 'closes_ms'))).toBe(closesAt);
    expect((await ledger(coupon.id))!.closes_at!.getTime()).toBe(closesAt);
    // The keys now expire at the new deadline: max(closes_at, valid_until) + REDIS_RETENTION.
    expect(Number(await redis.hget(couponKeys(coupon.id).meta, 'expire_at_ms'))).toBe(timestampDate(coupon.validUntil!).getTime() + 7 * 86_400_000);
    // Closing a closed coupon is an OK no-op.
    expect(timestampDate((await svc.client.closeCoupon({ couponId: coupon.id })).coupon!.closesAt!).getTime()).toBe(closesAt);
    expect((await changes(coupon.id)).map((c) => c.action)).toEqual(['CLOSE']);
  });
});

describe('UpdateCoupon', () => {
  it('a restock hands the new units to the next users with seqs past the old total, and the issuer completes at the new total', async () => {
    const coupon = await createCoupon(svc.client, 3);
    const first = await issueAll(coupon.id, ['u1', 'u2', 'u3', 'u4']);
    expect(first.filter((r) => 'seq' in r).map((r) => (r as { seq: number }).seq).sort()).toEqual([1, 2, 3]);
    expect(first.filter((r) => 'reason' in r)).toEqual([{ userId: expect.any(String) as string, code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' }]);
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
    await until('complete at 3', async () => (await ledger(coupon.id))!.completed_at !== null);

    const restocked = (await svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 5n }, updateMask: { paths: ['total_quantity'] } })).coupon!;
    expect(restocked).toMatchObject({ totalQuantity: 5n, acceptedCount: 3n, remaining: 2n, status: CouponStatus.OPEN });
    expect((await ledger(coupon.id))!.completed_at).toBeNull();
    const loser = first.find((r) => 'reason' in r)!.userId;
    const second = await issueAll(coupon.id, [loser, 'u5', 'u6']);
    expect(second.filter((r) => 'seq' in r).map((r) => (r as { seq: number }).seq).sort()).toEqual([4, 5]);
    expect(second.filter((r) => 'reason' in r).map((r) => (r as { reason: string }).reason)).toEqual(['COUPON_SOLD_OUT']);

    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
    const rows = await db('user_coupons').where({ coupon_id: coupon.id }).orderBy('seq').select('seq');
    expect(rows.map((r: { seq: number }) => Number(r.seq))).toEqual([1, 2, 3, 4, 5]);
    const after = (await ledger(coupon.id))!;
    expect({ issued: Number(after.issued_count), total: Number(after.total_quantity), complete: after.completed_at !== null }).toEqual({ issued: 5, total: 5, complete: true });
    expect((await svc.client.getCoupon({ couponId: coupon.id })).coupon).toMatchObject({ status: CouponStatus.COMPLETE, issuedCount: 5n, remaining: 0n });

    // Lowering below the seqs handed out is refused, and nothing changes anywhere.
    expect(await refusal(svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 4n }, updateMask: { paths: ['total_quantity'] } })))
      .toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'QUANTITY_BELOW_ACCEPTED' });
    expect(Number((await ledger(coupon.id))!.total_quantity)).toBe(5);
    expect(await redis.hget(couponKeys(coupon.id).meta, 'total')).toBe('5');
    expect((await changes(coupon.id)).map((c) => [c.action, c.before.total_quantity, c.after.total_quantity])).toEqual([['UPDATE', 3, 5]]);
  });

  it('a lowering below the seqs handed out names the highest one as its floor, also while the ledger has not caught up', async () => {
    // Found by the model test (test/model/): the ledger's issued count was answered as the floor,
    // below the seq a winner the issuer had not written yet already holds.
    const coupon = await createCoupon(svc.client, 10);
    await issueAll(coupon.id, ['f1', 'f2']);
    await until('the ledger holds both winners', async () => Number((await ledger(coupon.id))!.issued_count) === 2);
    svc.issuer.child.kill('SIGSTOP');
    try {
      expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'f3' })).seq).toBe(3n);
      for (const total of [1n, 2n]) {
        const err = await callError(svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: total }, updateMask: { paths: ['total_quantity'] } }));
        expect({ code: err.code, reason: err.reason, floor: err.detail?.metadata.floor }).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'QUANTITY_BELOW_ACCEPTED', floor: '3' });
      }
      // The floor itself is accepted.
      expect((await svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 3n }, updateMask: { paths: ['total_quantity'] } })).coupon).toMatchObject({ totalQuantity: 3n, acceptedCount: 3n, remaining: 0n });
    } finally {
      svc.issuer.child.kill('SIGCONT');
    }
    expect(Number((await ledger(coupon.id))!.total_quantity)).toBe(3);
    expect(await redis.hget(couponKeys(coupon.id).meta, 'total')).toBe('3');
    expect((await changes(coupon.id)).map((c) => [c.action, c.before.total_quantity, c.after.total_quantity])).toEqual([['UPDATE', 10, 3]]);
  });

  it('lowers the total down to the seqs handed out, and renames, in one call', async () => {
    const coupon = await createCoupon(svc.client, 10);
    await issueAll(coupon.id, ['x1', 'x2']);
    const cut = (await svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 3n, name: 'smaller sale' }, updateMask: { paths: ['total_quantity', 'name'] } })).coupon!;
    expect(cut).toMatchObject({ name: 'smaller sale', totalQuantity: 3n, remaining: 1n });
    const more = await issueAll(coupon.id, ['x3', 'x4']);
    expect(more.filter((r) => 'seq' in r).map((r) => (r as { seq: number }).seq)).toEqual([3]);
    expect(more.filter((r) => 'reason' in r).map((r) => (r as { reason: string }).reason)).toEqual(['COUPON_SOLD_OUT']);
    expect((await ledger(coupon.id))!.name).toBe('smaller sale');
  });

  it('refuses a bad mask, bad values, an unknown coupon and any role but operator, changing nothing', async () => {
    const coupon = await createCoupon(svc.client, 5, { closesInMs: 3_600_000, validForMs: 7_200_000 });
    const invalid = (field: string) => ({ code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD', field });
    const fieldOf = async (p: Promise<unknown>) => { const e = await callError(p); return { code: e.code, reason: e.reason, field: e.field }; };
    expect(await fieldOf(svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 7n } }))).toEqual(invalid('update_mask'));
    expect(await fieldOf(svc.client.updateCoupon({ coupon: { id: coupon.id, discountAmount: 5n }, updateMask: { paths: ['discount_amount'] } }))).toEqual(invalid('update_mask'));
    expect(await fieldOf(svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 0n }, updateMask: { paths: ['total_quantity'] } }))).toEqual(invalid('coupon.total_quantity'));
    expect(await fieldOf(svc.client.updateCoupon({ coupon: { id: coupon.id, name: '' }, updateMask: { paths: ['name'] } }))).toEqual(invalid('coupon.name'));
    expect(await fieldOf(svc.client.updateCoupon({ coupon: { id: 'nope', name: 'x' }, updateMask: { paths: ['name'] } }))).toEqual(invalid('coupon.id'));
    // valid_until before closes_at, and closes_at before opens_at.
    const early = timestampFromDate(new Date(Date.now() + 60_000));
    expect(await fieldOf(svc.client.updateCoupon({ coupon: { id: coupon.id, validUntil: early }, updateMask: { paths: ['valid_until'] } }))).toEqual(invalid('valid_until'));
    expect(await fieldOf(svc.client.updateCoupon({ coupon: { id: coupon.id, closesAt: timestampFromDate(new Date(Date.now() - 3_600_000)) }, updateMask: { paths: ['closes_at'] } }))).toEqual(invalid('closes_at'));
    expect(await refusal(svc.client.pauseCoupon({ couponId: '00000000-0000-4000-8000-000000000000' }))).toEqual({ code: grpc.status.NOT_FOUND, reason: 'COUPON_NOT_FOUND' });
    const denied = { code: grpc.status.PERMISSION_DENIED, reason: 'ROLE_NOT_ALLOWED' };
    for (const role of ['storefront', 'payment'] as const) {
      const c = couponClient(svc.api.address, false, [role]);
      try {
        expect(await refusal(c.pauseCoupon({ couponId: coupon.id }))).toEqual(denied);
        expect(await refusal(c.resumeCoupon({ couponId: coupon.id }))).toEqual(denied);
        expect(await refusal(c.closeCoupon({ couponId: coupon.id }))).toEqual(denied);
        expect(await refusal(c.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 9n }, updateMask: { paths: ['total_quantity'] } }))).toEqual(denied);
      } finally { c.close(); }
    }
    const row = (await ledger(coupon.id))!;
    expect({ total: Number(row.total_quantity), paused: row.paused_at, closes: row.closes_at!.getTime() }).toEqual({ total: 5, paused: null, closes: timestampDate(coupon.closesAt!).getTime() });
    expect(await changes(coupon.id)).toEqual([]);
    expect(await redis.hmget(couponKeys(coupon.id).meta, 'total', 'paused')).toEqual(['5', null]);
  });
});

describe("from an operator's shell", () => {
  it('buf curl (reflection) restocks with a JSON update_mask, and plain HTTP Connect JSON pauses, as docs/operations.md shows', async () => {
    const coupon = await createCoupon(svc.client, 10);
    const auth = `Authorization: Bearer ${await tokenFor('operator')}`;
    const restock = await run(bufBin, ['curl', '--http2-prior-knowledge', '-H', auth,
      '-d', JSON.stringify({ coupon: { id: coupon.id, totalQuantity: '15' }, updateMask: 'totalQuantity' }),
      `${svc.api.url}/coupon.v1.CouponService/UpdateCoupon`]);
    expect(restock.stderr).toBe('');
    expect((JSON.parse(restock.stdout) as { coupon: { totalQuantity: string; remaining: string } }).coupon).toMatchObject({ totalQuantity: '15', remaining: '15' });
    const res = await fetch(`${svc.api.url}/coupon.v1.CouponService/PauseCoupon`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: auth.slice('Authorization: '.length) }, body: JSON.stringify({ couponId: coupon.id }),
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { coupon: { status: string } }).coupon.status).toBe('COUPON_STATUS_PAUSED');
    expect((await ledger(coupon.id))!.total_quantity).toBe(15);
    expect((await changes(coupon.id)).map((c) => c.action)).toEqual(['UPDATE', 'PAUSE']);
  });
});

describe('changes during a sale', () => {
  it('after PauseCoupon answers OK, no new user wins in any worker, with 256 connections each calling', { timeout: 120_000 }, async () => {
    const coupon = await createCoupon(svc.client, 100_000);
    // 256 connections (a channel each), one call in flight on each, spread over both workers.
    const clients = Array.from({ length: 256 }, () => couponClient(svc.api.address, true, ['storefront']));
    let pausedAt = 0;
    const outcomes: { userId: string; startedAt: number; ok: boolean; code?: number; reason?: string }[] = [];
    let next = 0;
    // Calls go on until 2 s after the pause's OK, however long the machine takes to get there.
    const givingUpAt = Date.now() + 60_000;
    const worker = async (w: number) => {
      while (Date.now() < givingUpAt && (pausedAt === 0 || Date.now() < pausedAt + 2_000)) {
        const userId = `rush-${next++}`;
        const startedAt = Date.now();
        const c = clients[w % clients.length]!;
        await c.issueCoupon({ couponId: coupon.id, userId }).then(
          () => outcomes.push({ userId, startedAt, ok: true }),
          (err: { code?: number; reason?: string }) => outcomes.push({ userId, startedAt, ok: false, code: err.code, reason: err.reason }),
        );
      }
    };
    try {
      const rush = Promise.all(Array.from({ length: 256 }, (_, w) => worker(w)));
      await new Promise((r) => setTimeout(r, 1_500));
      await svc.client.pauseCoupon({ couponId: coupon.id });
      pausedAt = Date.now();
      await rush;
    } finally {
      for (const c of clients) c.close();
    }
    // A call whose client deadline passed on a loaded machine (or that heard "not confirmed yet")
    // may still have won: its answer says nothing either way. Every other answer is definite.
    const ambiguous = (o: (typeof outcomes)[number]) => o.code === grpc.status.DEADLINE_EXCEEDED || o.reason === 'BACKEND_UNAVAILABLE';
    const winners = new Set(Object.keys(await redis.hgetall(couponKeys(coupon.id).winners)));
    const told = outcomes.filter((o) => o.ok);
    const afterPause = outcomes.filter((o) => o.startedAt > pausedAt);
    expect(told.length, 'no call won before the pause').toBeGreaterThan(0);
    expect(afterPause.filter((o) => !ambiguous(o)).length, 'no call answered after the pause').toBeGreaterThan(100);
    expect(afterPause.filter((o) => o.ok || (o.reason !== 'COUPON_PAUSED' && !ambiguous(o)))).toEqual([]);
    // The gate holds exactly the users told OK, and those whose answer was lost; none whose call
    // began after the pause answered OK.
    expect(told.filter((o) => !winners.has(o.userId))).toEqual([]);
    expect(outcomes.filter((o) => !o.ok && winners.has(o.userId) && !ambiguous(o))).toEqual([]);
    expect(afterPause.filter((o) => winners.has(o.userId))).toEqual([]);
    // The ledger takes every winner.
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue, 90_000);
    expect(Number((await ledger(coupon.id))!.issued_count)).toBe(winners.size);
  });

  it('a restock in the middle of a rush: exactly the new total wins, every seq once', { timeout: 120_000 }, async () => {
    const coupon = await createCoupon(svc.client, 50);
    const users = Array.from({ length: 300 }, (_, i) => `buyer-${i}`);
    const clients = Array.from({ length: 8 }, () => couponClient(svc.api.address, true, ['storefront']));
    try {
      // Each user retries an UNAVAILABLE (a publish Kafka did not acknowledge in time on a loaded
      // machine: the slot was released), as a storefront would.
      const buy = async (c: CouponClient, userId: string): Promise<{ userId: string; seq: number } | { userId: string; reason?: string }> => {
        for (let attempt = 1; ; attempt++) {
          try {
            return { userId, seq: Number((await c.issueCoupon({ couponId: coupon.id, userId })).seq) };
          } catch (err) {
            const e = err as { code?: number; reason?: string };
            if (e.code !== grpc.status.UNAVAILABLE || attempt >= 20) return { userId, reason: e.reason };
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      };
      const rush = Promise.all(users.map((userId, i) => new Promise((r) => setTimeout(r, i * 5)).then(() => buy(clients[i % 8]!, userId))));
      await new Promise((r) => setTimeout(r, 400));
      await svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 80n }, updateMask: { paths: ['total_quantity'] } });
      const results = await rush;
      const seqs = results.filter((r) => 'seq' in r).map((r) => (r as { seq: number }).seq).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: 80 }, (_, i) => i + 1));
      expect(new Set(results.filter((r) => 'reason' in r).map((r) => (r as { reason: string }).reason))).toEqual(new Set(['COUPON_SOLD_OUT']));
    } finally {
      for (const c of clients) c.close();
    }
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue, 90_000);
    const rows = await db('user_coupons').where({ coupon_id: coupon.id }).orderBy('seq').select('seq');
    expect(rows.map((r: { seq: number }) => Number(r.seq))).toEqual(Array.from({ length: 80 }, (_, i) => i + 1));
    expect((await svc.client.getCoupon({ couponId: coupon.id })).coupon).toMatchObject({ status: CouponStatus.COMPLETE, issuedCount: 80n, acceptedCount: 80n });
  });
});

describe('a Redis loss after a change', () => {
  it('rebuilds the changed coupon, not the one created: still paused, with the new total', { timeout: 180_000 }, async () => {
    const own = await startOwnRedis();
    const lossEnv = { ...uniqueEnv('coupon-changes-loss'), API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000', REDIS_URL: own.url };
    const [lossApi, lossIssuer] = await Promise.all([startService('api', lossEnv), startService('issuer', lossEnv)]);
    const client = couponClient(lossApi.address);
    try {
      const coupon = await createCoupon(client, 2);
      // No fault until the restart: a publish that misses its bound on a loaded machine is retried, as a caller would.
      const issue = (userId: string) => decided(() => client.issueCoupon({ couponId: coupon.id, userId }));
      expect((await issue('one')).seq).toBe(1n);
      expect((await issue('two')).seq).toBe(2n);
      await client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 4n }, updateMask: { paths: ['total_quantity'] } });
      await client.pauseCoupon({ couponId: coupon.id });
      await waitForCaughtUp(kafka(), lossEnv.KAFKA_ISSUER_GROUP, topicNames(lossEnv.KAFKA_TOPIC_PREFIX).issue);

      await own.restart();

      // The rebuild arms the gate from the ledger: paused, total 4.
      const paused = await callError(afterRebuild(() => client.issueCoupon({ couponId: coupon.id, userId: 'three' })));
      expect({ code: paused.code, reason: paused.reason }).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_PAUSED' });
      expect(await own.client().hmget(couponKeys(coupon.id).meta, 'total', 'paused')).toEqual(['4', '1']);
      expect((await issue('two')).seq).toBe(2n);
      await client.resumeCoupon({ couponId: coupon.id });
      expect((await issue('three')).seq).toBe(3n);
      expect((await issue('four')).seq).toBe(4n);
      expect(await refusal(issue('five'))).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' });
    } finally {
      client.close();
      await Promise.all([lossApi.stop(), lossIssuer.stop()]);
      await dropEnvironment(kafka(), topicNames(lossEnv.KAFKA_TOPIC_PREFIX));
      await own.stop();
    }
  });
});

describe('a change the ledger does not take', () => {
  it('is put back in the gate: the caller hears UNAVAILABLE and nothing changed anywhere', { timeout: 120_000 }, async () => {
    // A coupon-api whose changes fail after the gate took them (as a lost reply or a failed commit would).
    const failing = await startService('api', { ...svc.env, API_WORKERS: '1', FAILPOINT: 'fail-change-after-gate' });
    const client = couponClient(failing.address);
    try {
      const coupon = await createCoupon(client, 2);
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'first' })).seq).toBe(1n);
      const unavailable = { code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' };
      expect(await refusal(client.pauseCoupon({ couponId: coupon.id }))).toEqual(unavailable);
      expect(await refusal(client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 5n }, updateMask: { paths: ['total_quantity'] } }))).toEqual(unavailable);
      expect(await redis.hmget(couponKeys(coupon.id).meta, 'total', 'paused')).toEqual(['2', null]);
      const row = (await ledger(coupon.id))!;
      expect({ total: row.total_quantity, paused: row.paused_at }).toEqual({ total: 2, paused: null });
      expect(await changes(coupon.id)).toEqual([]);
      // The gate sells as before: one more unit, then sold out at the ledger's total.
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'second' })).seq).toBe(2n);
      expect(await refusal(client.issueCoupon({ couponId: coupon.id, userId: 'third' }))).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' });
    } finally {
      client.close();
      await failing.stop();
    }
  });

  it('a repeat that changes nothing in the ledger still puts the ledger\'s state in the gate (a gate that kept a change is re-synced)', async () => {
    const coupon = await createCoupon(svc.client, 3);
    // As if a change's put-back had failed too: the gate paused, the ledger not.
    await redis.hset(couponKeys(coupon.id).meta, 'paused', '1');
    expect(await refusal(svc.client.issueCoupon({ couponId: coupon.id, userId: 'blocked' }))).toEqual({ code: grpc.status.FAILED_PRECONDITION, reason: 'COUPON_PAUSED' });
    expect((await svc.client.resumeCoupon({ couponId: coupon.id })).coupon!.status).toBe(CouponStatus.OPEN);
    expect(await redis.hget(couponKeys(coupon.id).meta, 'paused')).toBeNull();
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'blocked' })).seq).toBe(1n);
    expect(await changes(coupon.id)).toEqual([]);
  });
});

describe('a change that would end the retention at once', () => {
  it('is refused, and the gate keeps every key, its winners included', async () => {
    const day = 86_400_000;
    const coupon = await createCoupon(svc.client, 3, { opensInMs: -40 * day });
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'winner' })).seq).toBe(1n);
    const past = timestampFromDate(new Date(Date.now() - 30 * day));
    const err = await callError(svc.client.updateCoupon({ coupon: { id: coupon.id, closesAt: past, validUntil: past }, updateMask: { paths: ['closes_at', 'valid_until'] } }));
    expect({ code: err.code, reason: err.reason, field: err.field }).toEqual({ code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD', field: 'valid_until' });
    expect(await redis.exists(couponKeys(coupon.id).meta, couponKeys(coupon.id).winners)).toBe(2);
    expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 'winner' })).seq).toBe(1n);
    expect(await changes(coupon.id)).toEqual([]);
  });
});

describe('a restock whose ledger commit is slow', () => {
  it('a seq past the old total, won after the gate took the change and before the ledger committed it, is issued, not dead-lettered', { timeout: 120_000 }, async () => {
    const coupon = await createCoupon(svc.client, 2);
    await issueAll(coupon.id, ['s1', 's2']);
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
    // Hold the change's audit row: the gate takes the new total, the ledger's commit waits.
    const blocker = await db.transaction();
    try {
      await blocker.raw('LOCK TABLE coupon_changes IN EXCLUSIVE MODE');
      const restock = svc.client.updateCoupon({ coupon: { id: coupon.id, totalQuantity: 3n }, updateMask: { paths: ['total_quantity'] } }, { timeoutMs: 60_000 });
      restock.catch(() => undefined);
      await until('the gate has the new total', async () => (await redis.hget(couponKeys(coupon.id).meta, 'total')) === '3');
      expect((await svc.client.issueCoupon({ couponId: coupon.id, userId: 's3' })).seq).toBe(3n);
      // The issuer meets the record while the ledger still says 2.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await blocker.commit();
      expect((await restock).coupon!.totalQuantity).toBe(3n);
    } finally {
      if (!blocker.isCompleted()) await blocker.rollback();
    }
    await until('s3 in the ledger', async () => (await db('user_coupons').where({ coupon_id: coupon.id, user_id: 's3' }).first()) !== undefined, 30_000);
    expect(Number((await ledger(coupon.id))!.issued_count)).toBe(3);
  });
});
