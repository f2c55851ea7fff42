// coupon-issuer against the real stack: every accepted request becomes exactly one ledger row,
// through crashes, duplicates, poison records and a database outage.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { CouponStatus, UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { EventRegistry } from '../../src/events/registry.ts';
import { topicNames } from '../../src/events/topics.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateReserve } from '../../src/gate/gate-scripts.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { config, db as newDb, kafka, readTopic, redis as newRedis, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';

const env = uniqueEnv('issuer');
const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
const db = newDb();
const r = newRedis();
const k = kafka();
let api: ServiceProcess;
let issuer: ServiceProcess;
let client: CouponClient;

const rowsOf = async (couponId: string) => Number((await db('user_coupons').where({ coupon_id: couponId }).count<{ count: string }[]>('* as count'))[0]!.count);
const couponRow = (couponId: string) => db('coupons').where({ id: couponId }).first<{ issued_count: number; completed_at: Date | null }>();

beforeAll(async () => {
  api = await startService('api', env);
  issuer = await startService('issuer', env);
  client = couponClient(api.address);
});
afterAll(async () => {
  client?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  await db.destroy();
  r.disconnect();
});

async function sale(couponId: string, users: number, c: CouponClient = client) {
  const results = await Promise.all(Array.from({ length: users }, (_, i) =>
    c.issueCoupon({ couponId, userId: `u${i}` }, { timeoutMs: 60_000 }).then((res) => ({ userId: `u${i}`, seq: Number(res.seq) }), () => undefined)));
  return results.filter((x) => x !== undefined);
}

describe('issuing end to end', () => {
  it('a 1,000-unit sale ends with 1,000 ledger rows, the coupon COMPLETE, and every winner ISSUED', async () => {
    const coupon = await createCoupon(client, 1_000);
    const winners = await sale(coupon.id, 1_300);
    expect(winners).toHaveLength(1_000);
    await until('1,000 rows', async () => (await rowsOf(coupon.id)) === 1_000);
    await until('COMPLETE', async () => (await client.getCoupon({ couponId: coupon.id })).coupon!.status === CouponStatus.COMPLETE);

    const row = await couponRow(coupon.id);
    expect(row.issued_count).toBe(1_000);
    expect(row.completed_at).not.toBeNull();
    const ledger = await db('user_coupons').where({ coupon_id: coupon.id }).select<{ user_id: string; seq: number }[]>('user_id', 'seq');
    expect(new Map(ledger.map((l) => [l.user_id, l.seq]))).toEqual(new Map(winners.map((w) => [w.userId, w.seq])));

    const got = (await client.getCoupon({ couponId: coupon.id })).coupon!;
    expect(got.issuedCount).toBe(1_000n);
    expect(got.acceptedCount).toBe(1_000n);
    await until('Redis marks all issued', async () => (await r.hlen(couponKeys(coupon.id).issued)) === 1_000);
    const states = await Promise.all(winners.map((w) => client.getUserCoupon({ couponId: coupon.id, userId: w.userId }, { timeoutMs: 30_000 })));
    for (const [i, s] of states.entries()) {
      expect(s.userCoupon!.state).toBe(UserCouponState.ISSUED);
      expect(s.userCoupon!.seq).toBe(BigInt(winners[i]!.seq));
      expect(s.userCoupon!.issuedAt).toBeDefined();
    }
    const loser = await client.getUserCoupon({ couponId: coupon.id, userId: 'u1299-never' });
    expect(loser.userCoupon!.state).toBe(UserCouponState.NOT_REQUESTED);
  });

  it('ListUserCoupons pages through the ledger, newest first, and refuses a forged token', async () => {
    const coupons: { id: string }[] = [];
    for (let i = 0; i < 5; i++) coupons.push(await createCoupon(client, 2));
    for (const c of coupons) await client.issueCoupon({ couponId: c.id, userId: 'collector' });
    await until('5 rows', async () => Number((await db('user_coupons').where({ user_id: 'collector' }).whereIn('coupon_id', coupons.map((c) => c.id)).count<{ count: string }[]>('* as count'))[0]!.count) === 5);
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await client.listUserCoupons({ userId: 'collector', pageSize: 2, pageToken: token });
      seen.push(...page.userCoupons.map((u) => u.couponId));
      for (const u of page.userCoupons) expect(u.state).toBe(UserCouponState.ISSUED);
      token = page.nextPageToken;
      pages++;
    } while (token);
    expect(seen.filter((id) => coupons.some((c) => c.id === id)).sort()).toEqual(coupons.map((c) => c.id).sort());
    expect(new Set(seen).size).toBe(seen.length);
    expect(pages).toBeGreaterThanOrEqual(3);
    const err = await client.listUserCoupons({ userId: 'collector', pageSize: 2, pageToken: 'forged' }).catch((e: { reason: string }) => e);
    expect((err as { reason: string }).reason).toBe('INVALID_PAGE_TOKEN');
  });
});

describe('duplicates and poison', () => {
  it('duplicate records of one (coupon, user) give one row; a poison record is dead-lettered and the rest of its batch issued', async () => {
    const coupon = await createCoupon(client, 10);
    const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
    const codec = await registry.forTopic(topics.issue, CouponIssueRequestedSchema);
    const record = (userId: string, seq: number) => ({
      key: coupon.id,
      value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId, seq: BigInt(seq), requestedAt: timestampNow(), totalQuantity: 10n })),
    });
    // The gate's reservations behind the records (the issuer drops a record the armed gate holds
    // no reservation of: issuer-claim.lua, LOST).
    const scripts = new CouponScripts(r);
    expect(await gateReserve(scripts, coupon.id, 'dup-user', Date.now())).toMatchObject({ status: 'RESERVED', seq: 1 });
    expect(await gateReserve(scripts, coupon.id, 'other-user', Date.now())).toMatchObject({ status: 'RESERVED', seq: 2 });
    const producer = k.producer();
    await producer.connect();
    // One send, one partition (same key): dup, dup, poison, another valid record, dup.
    await producer.send({ topic: topics.issue, acks: -1, messages: [
      record('dup-user', 1), record('dup-user', 1),
      { key: coupon.id, value: Buffer.from('definitely not a framed protobuf') },
      record('other-user', 2), record('dup-user', 1),
    ] });
    await producer.disconnect();
    await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue);

    const rows = await db('user_coupons').where({ coupon_id: coupon.id }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');
    expect(rows).toEqual([{ user_id: 'dup-user', seq: 1 }, { user_id: 'other-user', seq: 2 }]);
    expect((await couponRow(coupon.id)).issued_count).toBe(2);

    const dead = await readTopic(k, topics.issueDlt, (key) => key === coupon.id);
    expect(dead).toHaveLength(1);
    expect(dead[0]!.value.toString()).toBe('definitely not a framed protobuf');
    expect(dead[0]!.headers['x-error-reason']).toBe('BAD_MAGIC');
    expect(dead[0]!.headers['x-source-topic']).toBe(topics.issue);
    expect(dead[0]!.headers['x-error']).not.toBe('');
  });
});

describe('records the armed gate never wrote', () => {
  const lostCounter = async () => {
    const line = (await (await fetch(issuer.metricsUrl)).text()).split('\n').find((l) => l.startsWith('coupon_issuer_lost_records_total '));
    return Number(line?.split(' ')[1] ?? 'NaN');
  };

  it('a seq outside 1..total, or beyond any coupon, is dead-lettered with an alert; one whose reservation the gate lost is dropped and counted', async () => {
    const coupon = await createCoupon(client, 3);
    const codec = await new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY }).forTopic(topics.issue, CouponIssueRequestedSchema);
    const record = (userId: string, seq: bigint) => ({
      key: coupon.id,
      value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId, seq, requestedAt: timestampNow(), totalQuantity: 3n })),
    });
    // The gate is armed and holds one reservation; the other records name seqs it never gave out.
    expect(await gateReserve(new CouponScripts(r), coupon.id, 'holder', Date.now())).toMatchObject({ status: 'RESERVED', seq: 1 });
    const lostBefore = await lostCounter();
    const producer = k.producer();
    await producer.connect();
    await producer.send({ topic: topics.issue, acks: -1, messages: [
      record('holder', 1n), record('over-total', 4n), record('beyond-any', 2n ** 53n + 1n), record('forgotten', 2n),
    ] });
    await producer.disconnect();
    await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue);

    expect(await db('user_coupons').where({ coupon_id: coupon.id }).select('user_id', 'seq')).toEqual([{ user_id: 'holder', seq: 1 }]);
    const dead = await readTopic(k, topics.issueDlt, (key) => key === coupon.id);
    expect(dead.map((d) => d.headers['x-error-reason'])).toEqual(['UNKNOWN_COUPON_OR_SEQ', 'UNKNOWN_COUPON_OR_SEQ']);
    expect(dead.map((d) => d.headers['x-error']).sort()).toEqual([`seq 4 is outside 1..total of coupon ${coupon.id}`, `seq ${2n ** 53n + 1n} is outside 1..total of any coupon`]);
    expect((await db('dead_letters').where({ topic: topics.issue, coupon_id: coupon.id }).orderBy('offset').select('user_id', 'reason'))).toEqual([
      { user_id: 'over-total', reason: 'UNKNOWN_COUPON_OR_SEQ' }, { user_id: 'beyond-any', reason: 'UNKNOWN_COUPON_OR_SEQ' },
    ]);
    expect(issuer.logs.filter((l) => l.msg === 'coupon.issue.dead_lettered' && l.reason === 'UNKNOWN_COUPON_OR_SEQ' && l.alert === true).length).toBeGreaterThanOrEqual(1);

    // The one with a seq in range but no reservation: dropped (its seq may be someone else's), and counted.
    const lost = issuer.logs.filter((l) => l.msg === 'dropped a record whose reservation the gate no longer holds' && l.coupon_id === coupon.id);
    expect(lost.map((l) => l.user_id)).toEqual(['forgotten']);
    expect(await lostCounter()).toBe(lostBefore + 1);
  });
});

describe('issuer crash', () => {
  it('SIGKILL in the middle of a backlog loses nothing and doubles nothing', { timeout: 180_000 }, async () => {
    await issuer.stop();
    const coupon = await createCoupon(client, 3_000);
    const winners = await sale(coupon.id, 3_000);
    expect(winners).toHaveLength(3_000);

    issuer = await startService('issuer', { ...env, LOG_LEVEL: 'info' });
    await until('some rows written', async () => (await rowsOf(coupon.id)) > 0, 60_000, 20);
    await issuer.kill();
    const atCrash = await rowsOf(coupon.id);

    issuer = await startService('issuer', env);
    await until('all 3,000 rows', async () => (await rowsOf(coupon.id)) === 3_000);
    await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue);
    const row = await couponRow(coupon.id);
    expect(row.issued_count).toBe(3_000);
    expect(row.completed_at).not.toBeNull();
    const distinctSeqs = await db('user_coupons').where({ coupon_id: coupon.id }).countDistinct<{ n: string }[]>('seq as n');
    expect(Number(distinctSeqs[0]!.n)).toBe(3_000);
    expect(atCrash).toBeLessThanOrEqual(3_000);
  });
});
