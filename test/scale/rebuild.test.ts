// Rebuilding a coupon's gate after Redis lost it, at scale (docs/design.md#growth): the
// ledger is streamed a page at a time, every Redis call carries one bounded chunk, and two
// rebuilds at once still hand out each free seq once. (rebuild-through-api.test.ts: the same
// through coupon-api, measuring Redis.)
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateRebuilder } from '../../src/gate/rebuild.ts';
import { ledgerIsFinal } from '../../src/store/loss-guard.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CHUNK, CouponScripts } from '../../src/store/scripts.ts';
import { gateReserve } from '../../src/gate/gate-scripts.ts';
import { slowlog, startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { db as newDb, testLog } from '../support/stack.ts';

const db = newDb();
let redis: PrivateRedis;
const created: string[] = [];

beforeAll(async () => { redis = await startPrivateRedis(); });
afterAll(async () => {
  for (const id of created) {
    await db('user_coupons').where({ coupon_id: id }).delete();
    await db('coupons').where({ id }).delete();
  }
  await db.destroy();
  await redis?.stop();
});

/** A coupon in the ledger only (as after a Redis loss), whose rows hold exactly `seqs` (user "u<seq>"). */
async function ledgerCoupon(total: number, seqs: number[]): Promise<string> {
  const id = randomUUID();
  created.push(id);
  await db('coupons').insert({ id, name: 'rebuild at scale', total_quantity: total, opens_at: new Date(Date.now() - 60_000), issued_count: seqs.length });
  await db.raw(`INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at) SELECT ?, 'u' || s, s, now() FROM unnest(?::bigint[]) AS s`, [id, seqs]);
  return id;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

function rebuilder(pageSize: number) {
  // Its own connection, as another coupon-api would have.
  const client = redis.client.duplicate();
  const scripts = new CouponScripts(client);
  return {
    client,
    scripts,
    rebuilder: new GateRebuilder({ db, redis: client, scripts, log: testLog, guard: ledgerIsFinal, ledgerPageSize: pageSize }),
  };
}

describe('the paged gate rebuild', () => {
  it('restores a coupon whose ledger spans several pages with gaps: every winner keeps their seq, and two rebuilds at once list each free seq once', async () => {
    // Gaps at the start, inside pages and across page boundaries (pages of 7 seqs).
    const gaps = [1, 4, 6, 7, 8, 17, 18, 19, 25, 40, 41, 42, 43, 44, 45, 46, 47, 59];
    const seqs = range(1, 60).filter((s) => !gaps.includes(s));
    const couponId = await ledgerCoupon(80, seqs);

    // Every ledger query returns one page at most.
    let largestQuery = 0;
    const onResponse = (response: unknown) => { if (Array.isArray(response)) largestQuery = Math.max(largestQuery, response.length); };
    db.on('query-response', onResponse);
    const [a, b] = [rebuilder(7), rebuilder(7)];
    try {
      const answers = await Promise.all([a.rebuilder.arm(couponId, 'first-caller'), b.rebuilder.arm(couponId, 'second-caller')]);
      expect(answers).toEqual(['ARMED', 'ARMED']);
    } finally {
      db.off('query-response', onResponse);
    }
    expect(largestQuery).toBeLessThanOrEqual(7);

    const k = couponKeys(couponId);
    const r = redis.client;
    expect(await r.hgetall(k.winners)).toEqual(Object.fromEntries(seqs.map((s) => [`u${s}`, String(s)])));
    expect(Object.keys(await r.hgetall(k.issued)).sort()).toEqual(seqs.map((s) => `u${s}`).sort());
    expect(await r.lrange(k.free, 0, -1)).toEqual(gaps.map(String));
    expect(await r.get(k.next)).toBe('60');
    expect(await r.keys(`coupon:{${couponId}}:free:staging:*`)).toEqual([]);

    // What users see: a winner keeps their seq; newcomers get the gaps first, lowest first, then fresh seqs.
    const scripts = a.scripts;
    expect(await gateReserve(scripts, couponId, 'u23', Date.now())).toEqual({ status: 'EXISTING', seq: 23, state: 'ISSUED', unacked: false });
    const newcomers: number[] = [];
    for (let i = 0; i < gaps.length + 3; i++) {
      const res = await gateReserve(scripts, couponId, `new-${i}`, Date.now());
      expect(res.status).toBe('RESERVED');
      if (res.status === 'RESERVED') newcomers.push(res.seq);
    }
    expect(newcomers).toEqual([...gaps, 61, 62, 63]);
    a.client.disconnect();
    b.client.disconnect();
  });

  it('sends a long run of free seqs in bounded chunks', async () => {
    const couponId = await ledgerCoupon(10_000, [2_500, 2_501]);
    const { rebuilder: rb, client } = rebuilder(1_000);
    await redis.client.config('SET', 'slowlog-log-slower-than', '0');
    await redis.client.slowlog('RESET');
    expect(await rb.arm(couponId, 'anyone')).toBe('ARMED');
    const calls = (await slowlog(redis.client)).filter((c) => c.command.startsWith('eval'));
    await redis.client.config('SET', 'slowlog-log-slower-than', '10000');
    const k = couponKeys(couponId);
    expect(await redis.client.llen(k.free)).toBe(2_499);
    expect(await redis.client.lrange(k.free, 0, 2)).toEqual(['1', '2', '3']);
    expect(await redis.client.lindex(k.free, -1)).toBe('2499');
    // 2,499 seqs: three 'free' calls of at most CHUNK seqs each, plus 'begin', 'rows' and 'arm'.
    expect(calls.length).toBe(6);
    for (const c of calls) expect(c.args).toBeLessThanOrEqual(CHUNK * 3 + 40);
    client.disconnect();
  });
});
