// Answers that were wrong. Pages that skipped rows, a crafted page token that
// answered INTERNAL, outages (Redis BUSY, PostgreSQL 53300 and 57014) that answered INTERNAL, and
// a failed CreateCoupon that left an armed gate behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { db as newDb, uniqueEnv } from '../support/stack.ts';

const db = newDb();
afterAll(() => db.destroy());

describe('ListUserCoupons and page tokens', () => {
  let api: ServiceProcess;
  let client: CouponClient;
  beforeAll(async () => {
    api = await startService('api', uniqueEnv('pages'));
    client = couponClient(api.address);
  });
  afterAll(async () => { client.close(); await api.stop(); });

  it('pages through rows that share one issued_at (one issuer batch) without skipping any', async () => {
    const userId = `batch-user-${Date.now()}`;
    const coupons = await Promise.all(Array.from({ length: 5 }, () => createCoupon(client, 10)));
    // What one issuer batch writes: the same now() on every row, microseconds included.
    await db('user_coupons').insert(coupons.map((c, i) => ({ coupon_id: c.id, user_id: userId, seq: 1 + i, requested_at: db.fn.now(), issued_at: '2026-03-01T10:00:00.123456Z' })));
    for (const pageSize of [1, 2]) {
      const seen: string[] = [];
      let pageToken = '';
      do {
        const page = await client.listUserCoupons({ userId, pageSize, pageToken });
        seen.push(...page.userCoupons.map((u) => u.couponId));
        pageToken = page.nextPageToken;
      } while (pageToken);
      expect(seen).toHaveLength(5);
      expect(new Set(seen)).toEqual(new Set(coupons.map((c) => c.id)));
    }
  });

  it('refuses a crafted page token with INVALID_ARGUMENT INVALID_PAGE_TOKEN, never INTERNAL', async () => {
    const userId = 'crafted';
    const tokens = [
      { t: '1', c: '00000000-0000-4000-8000-000000000000', u: userId },
      { t: '2026-13-01T00:00:00.000000Z', c: '00000000-0000-4000-8000-000000000000', u: userId },
      { t: '2026-02-30T00:00:00.000000Z', c: '00000000-0000-4000-8000-000000000000', u: userId },
      { t: '2026-01-01T00:00:00.000000Z', c: 'x', u: userId },
    ].map((t) => Buffer.from(JSON.stringify(t)).toString('base64url'));
    for (const pageToken of [...tokens, 'not base64 at all', 'e30']) {
      const err = await callError(client.listUserCoupons({ userId, pageSize: 1, pageToken }));
      expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_PAGE_TOKEN' });
    }
    expect(api.child.exitCode).toBeNull();
  });
});

describe('outages answer UNAVAILABLE BACKEND_UNAVAILABLE, never INTERNAL', () => {
  it('Redis busy running a script', { timeout: 60_000 }, async () => {
    const redis = await startOwnRedis(['--busy-reply-threshold', '100']);
    const api = await startService('api', { ...uniqueEnv('busy'), REDIS_URL: redis.url });
    const client = couponClient(api.address);
    try {
      const coupon = await createCoupon(client, 10);
      const blocker = redis.client();
      const stuck = blocker.eval('local i = 0 while true do i = i + 1 end', 0).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 300));
      const err = await callError(client.issueCoupon({ couponId: coupon.id, userId: 'u1' }));
      expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      await redis.client().call('SCRIPT', 'KILL');
      await stuck;
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'u1' })).seq).toBe(1n);
    } finally {
      client.close();
      await api.stop();
      await redis.stop();
    }
  });

  it('Redis full (OOM under noeviction)', { timeout: 60_000 }, async () => {
    const redis = await startOwnRedis(['--maxmemory-policy', 'noeviction']);
    const api = await startService('api', { ...uniqueEnv('oom'), REDIS_URL: redis.url });
    const client = couponClient(api.address);
    try {
      const coupon = await createCoupon(client, 10);
      // Redis is over its memory limit: with noeviction it refuses every write (OOM).
      const admin = redis.client();
      await admin.config('SET', 'maxmemory', '1');
      expect(await admin.set('probe', 'x').catch((e: Error) => e.message)).toMatch(/^OOM/);
      const err = await callError(client.issueCoupon({ couponId: coupon.id, userId: 'u1' }));
      expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      await admin.config('SET', 'maxmemory', '0');
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'u1' })).seq).toBe(1n);
    } finally {
      client.close();
      await api.stop();
      await redis.stop();
    }
  });

  it('PostgreSQL refusing connections (53300) and cancelling statements (57014)', { timeout: 60_000 }, async () => {
    const role = 'coupon_limited';
    await db.raw(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${role}') THEN CREATE ROLE ${role} LOGIN; END IF; END $$`);
    await db.raw(`ALTER ROLE ${role} CONNECTION LIMIT -1`);
    await db.raw(`ALTER ROLE ${role} RESET statement_timeout`);
    await db.raw(`GRANT ALL ON ALL TABLES IN SCHEMA public TO ${role}`);
    await db.raw(`GRANT ALL ON SCHEMA public TO ${role}`);
    const api = await startService('api', { ...uniqueEnv('pg-limits'), DATABASE_URL: `postgres://${role}@127.0.0.1:5432/test` });
    const client = couponClient(api.address);
    const dropSessions = () => db.raw('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ?', [role]);
    try {
      const coupon = await createCoupon(client, 10);
      // Too many connections for the role: every new session is refused with 53300.
      await db.raw(`ALTER ROLE ${role} CONNECTION LIMIT 0`);
      await dropSessions();
      for (let i = 0; i < 3; i++) {
        const err = await callError(client.getCoupon({ couponId: coupon.id }));
        expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      }
      await db.raw(`ALTER ROLE ${role} CONNECTION LIMIT -1`);
      // Statements cancelled by statement_timeout (57014) while a lock holds them up.
      await db.raw(`ALTER ROLE ${role} SET statement_timeout = '200ms'`);
      await dropSessions();
      await db.transaction(async (trx) => {
        await trx.raw('LOCK TABLE coupons IN ACCESS EXCLUSIVE MODE');
        const err = await callError(client.getCoupon({ couponId: coupon.id }));
        expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      });
      expect((await client.getCoupon({ couponId: coupon.id })).coupon!.id).toBe(coupon.id);
      expect(api.logs.some((l) => l.msg === 'unexpected error')).toBe(false);
    } finally {
      await db.raw(`ALTER ROLE ${role} CONNECTION LIMIT -1`);
      await db.raw(`ALTER ROLE ${role} RESET statement_timeout`);
      client.close();
      await api.stop();
    }
  });
});

describe('CreateCoupon failing after it started arming', () => {
  let redis: OwnRedis;
  afterAll(() => redis?.stop());

  it('leaves nothing behind: no armed keys in Redis, no row in the ledger', { timeout: 60_000 }, async () => {
    redis = await startOwnRedis();
    const env = uniqueEnv('half-made');
    const api = await startService('api', { ...env, REDIS_URL: redis.url });
    const client = couponClient(api.address);
    try {
      // Redis refuses SET from now on (an ACL change, as a failing or read-only replica would):
      // the old order armed the gate with a script first and failed on the SET after it.
      await redis.client().call('ACL', 'SETUSER', 'default', '-set');
      const name = `half-made ${Date.now()}`;
      const err = await callError(createCoupon(client, 10, { name }));
      expect(err.code).not.toBe(grpc.status.OK);
      expect(await redis.client().keys('coupon:*')).toEqual([]);
      expect(await db('coupons').where({ name })).toHaveLength(0);
    } finally {
      client.close();
      await api.stop();
    }
  });
});
