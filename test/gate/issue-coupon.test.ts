// IssueCoupon as callers see it, through the real server and @grpc/grpc-js, with the stored state
// in Redis, Kafka and PostgreSQL checked after each scenario.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { fromBinary } from '@bufbuild/protobuf';
import { CouponStatus, UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { decodeFrame } from '../../src/events/wire-format.ts';
import { Topics } from '../../src/events/topics.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { kafka, readTopic, redis as newRedis } from '../support/stack.ts';

let api: ServiceProcess;
let client: CouponClient;
const r = newRedis();
const k = kafka();

beforeAll(async () => {
  // This file is about the gate's decisions; a generous publish timeout keeps a loaded CI machine
  // from turning a slow ack into PUBLISH_FAILED (that path has its own tests in faults.test.ts).
  api = await startService('api', { PUBLISH_TIMEOUT_MS: '30000', RECOVERY_STALE_MS: '60000' });
  client = couponClient(api.address);
});
afterAll(async () => {
  client?.close();
  await api?.stop();
  r.disconnect();
});

async function issuedOnTopic(couponId: string) {
  const records = await readTopic(k, Topics.issue, (key) => key === couponId);
  return records.map((rec) => fromBinary(CouponIssueRequestedSchema, decodeFrame(rec.value).payload));
}

describe('IssueCoupon under contention', () => {
  it('grants exactly the quantity: 1,000 units, 5,000 users, 20,000 concurrent calls over several connections', { timeout: 180_000 }, async () => {
    const coupon = await createCoupon(client, 1_000);
    const users = Array.from({ length: 5_000 }, (_, i) => `user-${i}`);
    const clients = Array.from({ length: 4 }, () => couponClient(api.address, true));
    // Each user asks four times, interleaved, over four HTTP/2 connections.
    const calls = Array.from({ length: 20_000 }, (_, i) => {
      const userId = users[i % users.length]!;
      return clients[i % clients.length]!.issueCoupon({ couponId: coupon.id, userId }, { timeoutMs: 120_000 })
        .then((res) => ({ userId, ok: true as const, seq: Number(res.seq) }))
        .catch((err: unknown) => ({ userId, ok: false as const, code: (err as { code: number }).code, reason: (err as { reason: string }).reason }));
    });
    const results = await Promise.all(calls);
    clients.forEach((c) => c.close());

    const winners = new Map<string, Set<number>>();
    for (const res of results) {
      if (res.ok) winners.set(res.userId, (winners.get(res.userId) ?? new Set()).add(res.seq));
      else {
        expect({ code: res.code, reason: res.reason }).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, reason: 'COUPON_SOLD_OUT' });
      }
    }
    expect(winners.size).toBe(1_000);
    // A winner who repeats gets their original seq: one seq per winner.
    for (const seqs of winners.values()) expect(seqs.size).toBe(1);
    const seqs = [...winners.values()].map((s) => [...s][0]!).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 1_000 }, (_, i) => i + 1));
    // Losers never got OK on any attempt.
    for (const res of results) if (!res.ok) expect(winners.has(res.userId)).toBe(false);

    // Kafka holds exactly those 1,000 (coupon, user) pairs, each once.
    const onTopic = await issuedOnTopic(coupon.id);
    expect(onTopic).toHaveLength(1_000);
    expect(new Set(onTopic.map((e) => e.userId))).toEqual(new Set(winners.keys()));
    for (const e of onTopic) expect([...winners.get(e.userId)!][0]).toBe(Number(e.seq));

    // Redis and GetCoupon agree.
    expect(await r.hlen(couponKeys(coupon.id).winners)).toBe(1_000);
    expect(await r.zcard(couponKeys(coupon.id).pending)).toBe(0);
    const got = (await client.getCoupon({ couponId: coupon.id })).coupon!;
    expect(got.acceptedCount).toBe(1_000n);
    expect(got.remaining).toBe(0n);
    expect([CouponStatus.SOLD_OUT, CouponStatus.COMPLETE]).toContain(got.status);
  });
});

describe('IssueCoupon answers', () => {
  it('repeats the original seq to a winner who asks again, taking no second slot', async () => {
    const coupon = await createCoupon(client, 3);
    const first = await client.issueCoupon({ couponId: coupon.id, userId: 'alice' });
    const again = await client.issueCoupon({ couponId: coupon.id, userId: 'alice' });
    expect(first.seq).toBe(1n);
    expect(first.state).toBe(UserCouponState.PENDING);
    expect(again.seq).toBe(1n);
    expect((await client.getCoupon({ couponId: coupon.id })).coupon!.acceptedCount).toBe(1n);
    expect((await issuedOnTopic(coupon.id)).map((e) => e.userId)).toEqual(['alice']);
  });

  it('a sold-out coupon answers RESOURCE_EXHAUSTED with reason COUPON_SOLD_OUT', async () => {
    const coupon = await createCoupon(client, 1);
    await client.issueCoupon({ couponId: coupon.id, userId: 'first' });
    const err = await callError(client.issueCoupon({ couponId: coupon.id, userId: 'second' }));
    expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(err.reason).toBe('COUPON_SOLD_OUT');
    expect((await client.getCoupon({ couponId: coupon.id })).coupon!.status).not.toBe(CouponStatus.OPEN);
  });

  it('before opens_at answers FAILED_PRECONDITION, COUPON_NOT_OPEN, and the coupon is SCHEDULED', async () => {
    const coupon = await createCoupon(client, 10, { opensInMs: 3_600_000 });
    expect(coupon.status).toBe(CouponStatus.SCHEDULED);
    const err = await callError(client.issueCoupon({ couponId: coupon.id, userId: 'early' }));
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.reason).toBe('COUPON_NOT_OPEN');
    expect(await r.hlen(couponKeys(coupon.id).winners)).toBe(0);
  });

  it('after closes_at answers FAILED_PRECONDITION, COUPON_CLOSED, and the coupon is CLOSED', async () => {
    const coupon = await createCoupon(client, 10, { opensInMs: -10_000, closesInMs: 300 });
    await client.issueCoupon({ couponId: coupon.id, userId: 'in-time' });
    await new Promise((res) => setTimeout(res, 400));
    const err = await callError(client.issueCoupon({ couponId: coupon.id, userId: 'late' }));
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.reason).toBe('COUPON_CLOSED');
    // A winner still learns their seq after closing.
    expect((await client.issueCoupon({ couponId: coupon.id, userId: 'in-time' })).seq).toBe(1n);
    const got = (await client.getCoupon({ couponId: coupon.id })).coupon!;
    expect(got.status).toBe(CouponStatus.CLOSED);
    expect(got.acceptedCount).toBe(1n);
  });

  it('an unknown coupon answers NOT_FOUND with reason COUPON_NOT_FOUND', async () => {
    for (const couponId of ['00000000-0000-4000-8000-000000000000', '00000000-0000-4000-8000-00000000000A']) {
      const err = await callError(client.issueCoupon({ couponId, userId: 'u' }));
      expect(err.code).toBe(grpc.status.NOT_FOUND);
      expect(err.reason).toBe('COUPON_NOT_FOUND');
      const get = await callError(client.getCoupon({ couponId }));
      expect(get.code).toBe(grpc.status.NOT_FOUND);
    }
  });

  it.each([
    ['empty coupon_id', { couponId: '', userId: 'u' }, 'coupon_id'],
    ['empty user_id', { couponId: 'c', userId: '' }, 'user_id'],
    ['user_id over 128 characters', { couponId: 'c', userId: 'u'.repeat(129) }, 'user_id'],
    ['coupon_id over 128 characters', { couponId: 'c'.repeat(129), userId: 'u' }, 'coupon_id'],
    ['control character in user_id', { couponId: 'c', userId: 'bad\u0000id' }, 'user_id'],
    ['newline in user_id', { couponId: 'c', userId: 'bad\nid' }, 'user_id'],
  ])('bad input (%s) answers INVALID_ARGUMENT naming the field, writing nothing', async (_name, req, field) => {
    const coupon = await createCoupon(client, 5);
    const err = await callError(client.issueCoupon({ ...req, couponId: req.couponId === 'c' ? coupon.id : req.couponId }));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.reason).toBe('INVALID_FIELD');
    expect(err.field).toBe(field);
    expect(await r.hlen(couponKeys(coupon.id).winners)).toBe(0);
  });

  it('accepts a 128-character user id with non-ASCII characters', async () => {
    const coupon = await createCoupon(client, 5);
    const res = await client.issueCoupon({ couponId: coupon.id, userId: '사용자'.repeat(42) + 'ab' });
    expect(res.seq).toBe(1n);
  });
});

describe('CreateCoupon', () => {
  it.each([
    ['total_quantity 0', { totalQuantity: 0n }, 'total_quantity'],
    ['total_quantity over 10,000,000', { totalQuantity: 10_000_001n }, 'total_quantity'],
    ['negative total_quantity', { totalQuantity: -5n }, 'total_quantity'],
    ['empty name', { name: '' }, 'name'],
    ['name over 200 characters', { name: 'n'.repeat(201) }, 'name'],
    ['closes before it opens', { closesAt: { seconds: 1n, nanos: 0 } }, 'closes_at'],
  ])('refuses %s with INVALID_ARGUMENT naming the field', async (_n, patch, field) => {
    const err = await callError(client.createCoupon({ name: 'x', totalQuantity: 10n, ...patch }));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.field).toBe(field);
  });

  it('creates an OPEN coupon whose counts start at zero, and arms its gate', async () => {
    const coupon = await createCoupon(client, 10_000_000, { name: 'big sale' });
    expect(coupon.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(coupon.status).toBe(CouponStatus.OPEN);
    expect(coupon.totalQuantity).toBe(10_000_000n);
    expect(coupon.acceptedCount).toBe(0n);
    expect(coupon.remaining).toBe(10_000_000n);
    expect(await r.hget(couponKeys(coupon.id).meta, 'total')).toBe('10000000');
  });
});
