// The gate through failures: the broker stops mid-sale, the process dies between reserve and
// publish, and a publish that "failed" but reached the broker. I1–I4 hold in each.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { CouponStatus, UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/health/v1/health_pb.js';
import { createGrpcClient, CouponCallError } from '../../src/client/grpc.ts';
import { EventRegistry } from '../../src/events/registry.ts';
import { topicNames } from '../../src/events/topics.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateRelease, gateReserve } from '../../src/gate/gate-scripts.ts';
import { kafkaDown, kafkaUp } from '../../scripts/stack.ts';
import { startService } from '../support/processes.ts';
import { couponClient, createCoupon, decided, type CouponClient } from '../support/coupons.ts';
import { config, db as newDb, kafka, readTopic, redis as newRedis, uniqueEnv, until, waitForCaughtUp } from '../support/stack.ts';
import { freePort } from '../support/ports.ts';

const db = newDb();
const r = newRedis();
afterAll(async () => { await db.destroy(); r.disconnect(); });

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');


type Outcome = { userId: string; ok: true; seq: number } | { userId: string; ok: false; code: number; reason: string };
const ask = (c: CouponClient, couponId: string, userIds: string[]) => Promise.all(userIds.map((userId) =>
  c.issueCoupon({ couponId, userId }, { timeoutMs: 30_000 }).then(
    (res): Outcome => ({ userId, ok: true, seq: Number(res.seq) }),
    (err: CouponCallError): Outcome => ({ userId, ok: false, code: err.code, reason: err.reason }))));

describe('the broker stops mid-sale', () => {
  it('answers UNAVAILABLE (PUBLISH_FAILED) while it is down, over-grants nothing, and sells exactly the total once it is back', { timeout: 240_000 }, async () => {
    const inst = { dir: join(import.meta.dirname, '..', '..', '.stack', `test-kafka-${process.pid}`), port: await freePort(), controllerPort: await freePort(), heap: '256m' };
    await kafkaUp(inst);
    const env = { ...uniqueEnv('broker-stop'), KAFKA_BROKERS: `127.0.0.1:${inst.port}`, KAFKA_TOPIC_PARTITIONS: '2', PUBLISH_TIMEOUT_MS: '2000' };
    const api = await startService('api', env);
    const issuer = await startService('issuer', env);
    const client = couponClient(api.address);
    const health = createGrpcClient(Health, api.address);
    try {
      const coupon = await createCoupon(client, 30);
      const other = await createCoupon(client, 5);
      // Before the fault, each user asks until decided: a fresh broker's first publishes can miss the
      // 2 s bound on a loaded machine, and PUBLISH_FAILED (slot released) tells the caller to retry.
      const before = await Promise.all(Array.from({ length: 10 }, (_, i) => decided(() => client.issueCoupon({ couponId: coupon.id, userId: `early-${i}` }, { timeoutMs: 30_000 }))
        .then((res): Outcome => ({ userId: `early-${i}`, ok: true, seq: Number(res.seq) }))));
      expect(before.every((o) => o.ok)).toBe(true);

      await kafkaDown(inst, 'SIGKILL');
      // PUBLISH_FAILED promises "the slot was released, retry is safe". When Redis lost the
      // coupon's state while the publish was failing, nothing was released: the answer must not
      // promise it.
      const lost = client.issueCoupon({ couponId: other.id, userId: 'lost-reservation' }, { timeoutMs: 30_000 }).then(() => undefined, (err: CouponCallError) => err);
      await until('the reservation', async () => (await r.hget(couponKeys(other.id).winners, 'lost-reservation')) !== null, 5_000, 20);
      await r.del(...(await r.keys(`coupon:{${other.id}}:*`)));
      const lostErr = await lost;
      expect(lostErr && { code: lostErr.code, reason: lostErr.reason }).toEqual({ code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      // Each of these users asks three times at once: no repeat may answer OK on the strength of a
      // first request whose publish is about to fail.
      const during = await ask(client, coupon.id, Array.from({ length: 30 }, (_, i) => `during-${i % 10}`));
      for (const o of during) {
        expect(o.ok).toBe(false);
        if (!o.ok) { expect(o.code).toBe(grpc.status.UNAVAILABLE); expect(o.reason).toBe('PUBLISH_FAILED'); }
      }
      // Released: nothing over-granted, the slots are back in the pool.
      expect(await r.hlen(couponKeys(coupon.id).winners)).toBe(10);
      expect((await client.getCoupon({ couponId: coupon.id })).coupon!.acceptedCount).toBe(10n);
      await until('NOT_SERVING while Kafka is down', async () => (await health.check({ service: '' })).status === HealthCheckResponse_ServingStatus.NOT_SERVING);

      await kafkaUp(inst);
      await until('SERVING again', async () => (await health.check({ service: '' })).status === HealthCheckResponse_ServingStatus.SERVING, 60_000);
      // Other users (and the ones who failed) now win the remaining 20 slots, and no more.
      let after: Outcome[] = [];
      await until('the producer to publish again', async () => {
        after = after.concat(await ask(client, coupon.id, [`probe-${after.length}`]));
        return after.at(-1)!.ok;
      }, 60_000, 500);
      const rest = await ask(client, coupon.id, [...new Set(during.map((o) => o.userId)), ...Array.from({ length: 30 }, (_, i) => `late-${i}`)]);
      const okUsers = [...before, ...after, ...rest].filter((o): o is Extract<Outcome, { ok: true }> => o.ok);
      expect(okUsers).toHaveLength(30);
      expect(okUsers.map((o) => o.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      for (const o of [...after, ...rest]) if (!o.ok) expect(['PUBLISH_FAILED', 'COUPON_SOLD_OUT']).toContain(o.reason);
      expect(rest.filter((o) => !o.ok).every((o) => !o.ok && o.reason === 'COUPON_SOLD_OUT')).toBe(true);

      // The ledger ends with exactly the 30 winners, seqs 1..30.
      await until('30 rows', async () => (await ledger(coupon.id)).length === 30, 90_000);
      await waitForCaughtUp(kafka(env.KAFKA_BROKERS.split(',')), env.KAFKA_ISSUER_GROUP, topicNames(env.KAFKA_TOPIC_PREFIX).issue);
      const rows = await ledger(coupon.id);
      expect(new Map(rows.map((x) => [x.user_id, x.seq]))).toEqual(new Map(okUsers.map((o) => [o.userId, o.seq])));
      const got = (await client.getCoupon({ couponId: coupon.id })).coupon!;
      expect(got.acceptedCount).toBe(30n);
      expect(got.issuedCount).toBe(30n);
      expect(got.status).toBe(CouponStatus.COMPLETE);
    } finally {
      client.close();
      health.close();
      await Promise.all([api.stop(), issuer.stop()]);
      await kafkaDown(inst);
      rmSync(inst.dir, { recursive: true, force: true });
    }
  });
});

describe('a crash between reserve and publish', () => {
  it('leaves a journaled reservation that the next coupon-api republishes; nothing is lost', { timeout: 120_000 }, async () => {
    const env = uniqueEnv('crash');
    const issuer = await startService('issuer', env);
    // One process (no cluster): the failpoint kills process.pid, and this test waits for coupon-api itself to die.
    const crashing = await startService('api', { ...env, FAILPOINT: 'crash-after-reserve', API_WORKERS: '1' });
    const c1 = couponClient(crashing.address);
    const coupon = await createCoupon(c1, 5);
    const err = await c1.issueCoupon({ couponId: coupon.id, userId: 'victim' }).catch((e: CouponCallError) => e);
    expect(err).toBeInstanceOf(CouponCallError);
    c1.close();
    await until('the api to die', () => Promise.resolve(crashing.child.exitCode !== null || crashing.child.signalCode !== null));
    expect(crashing.child.signalCode).toBe('SIGKILL');

    // The state a crash leaves: reserved and journaled, nothing on the topic.
    const k = couponKeys(coupon.id);
    expect(await r.hget(k.winners, 'victim')).toBe('1');
    expect(await r.zscore(k.pending, 'victim')).not.toBeNull();
    const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
    expect(await readTopic(kafka(), topics.issue, (key) => key === coupon.id)).toHaveLength(0);

    const api = await startService('api', { ...env, RECOVERY_INTERVAL_MS: '200', RECOVERY_STALE_MS: '1000', PUBLISH_TIMEOUT_MS: '500' });
    const client = couponClient(api.address);
    try {
      await until('the ledger row', async () => (await ledger(coupon.id)).length === 1, 60_000);
      expect(await ledger(coupon.id)).toEqual([{ user_id: 'victim', seq: 1 }]);
      expect(await r.zcard(k.pending)).toBe(0);
      expect(api.logs.some((l) => l.msg === 'recovered reservations whose publish had not finished')).toBe(true);
      // The victim's retry learns the original seq; nobody else lost a slot.
      expect((await client.issueCoupon({ couponId: coupon.id, userId: 'victim' })).seq).toBe(1n);
      await until('ISSUED', async () => (await client.getUserCoupon({ couponId: coupon.id, userId: 'victim' })).userCoupon!.state === UserCouponState.ISSUED);
      const others = await ask(client, coupon.id, ['a', 'b', 'c', 'd', 'e']);
      expect(others.filter((o) => o.ok)).toHaveLength(4);
      const got = (await client.getCoupon({ couponId: coupon.id })).coupon!;
      expect(got.acceptedCount).toBe(5n);
      await until('5 rows', async () => (await ledger(coupon.id)).length === 5);
    } finally {
      client.close();
      await Promise.all([api.stop(), issuer.stop()]);
    }
  });
});

describe('a publish that timed out but reached the broker', () => {
  const setup = async (name: string) => {
    const env = uniqueEnv(name);
    const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
    const api = await startService('api', env);
    const issuer = await startService('issuer', env);
    const client = couponClient(api.address);
    const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
    const codec = await registry.forTopic(topics.issue, CouponIssueRequestedSchema);
    const producer = kafka().producer();
    await producer.connect();
    const scripts = new CouponScripts(r);
    // What coupon-api does on IssueCoupon, up to a send whose ack never arrives.
    const reserveAndSend = async (couponId: string, userId: string) => {
      const reservedAt = Date.now();
      const res = await gateReserve(scripts, couponId, userId, reservedAt);
      if (res.status !== 'RESERVED') throw new Error(res.status);
      await producer.send({ topic: topics.issue, acks: -1, messages: [{ key: couponId, value: codec.encode(create(CouponIssueRequestedSchema, { couponId, userId, seq: BigInt(res.seq), requestedAt: timestampNow(), totalQuantity: 3n })) }] });
      return { seq: res.seq, reservedAt };
    };
    const close = async () => { client.close(); await producer.disconnect(); await Promise.all([api.stop(), issuer.stop()]); };
    return { env, topics, client, scripts, reserveAndSend, close };
  };

  it('released before the issuer saw it: the stale record is dropped and the slot is sold once', { timeout: 120_000 }, async () => {
    const t = await setup('ambiguous-released');
    try {
      const coupon = await createCoupon(t.client, 3);
      await t.client.issueCoupon({ couponId: coupon.id, userId: 'issued-early' });
      // Stop issuing until the release has happened, so the record is read only afterwards.
      const seq = await (async () => {
        const reservedAt = Date.now();
        const s = await gateReserve(t.scripts, coupon.id, 'timed-out', reservedAt);
        if (s.status !== 'RESERVED') throw new Error(s.status);
        expect(await gateRelease(t.scripts, coupon.id, 'timed-out', s.seq, reservedAt)).toBe('RELEASED');
        return s.seq;
      })();
      // The "failed" record arrives at the broker after all.
      const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
      const codec = await registry.forTopic(t.topics.issue, CouponIssueRequestedSchema);
      const p = kafka().producer();
      await p.connect();
      await p.send({ topic: t.topics.issue, acks: -1, messages: [{ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId: 'timed-out', seq: BigInt(seq), requestedAt: timestampNow(), totalQuantity: 3n })) }] });
      await p.disconnect();
      // Others take the remaining slots, including the released seq.
      const rest = await ask(t.client, coupon.id, ['x', 'y', 'z']);
      expect(rest.filter((o) => o.ok)).toHaveLength(2);
      await waitForCaughtUp(kafka(), t.env.KAFKA_ISSUER_GROUP, t.topics.issue);
      await until('3 rows', async () => (await ledger(coupon.id)).length === 3);
      const rows = await ledger(coupon.id);
      expect(rows.map((x) => x.seq)).toEqual([1, 2, 3]);
      expect(rows.map((x) => x.user_id)).not.toContain('timed-out');
      expect((await db('coupons').where({ id: coupon.id }).first<{ issued_count: number }>()).issued_count).toBe(3);
    } finally { await t.close(); }
  });

  it('a user released twice: the first stale record is still recognised and dropped', { timeout: 120_000 }, async () => {
    const t = await setup('ambiguous-twice');
    try {
      const coupon = await createCoupon(t.client, 3);
      await t.client.issueCoupon({ couponId: coupon.id, userId: 'early' });
      const firstAt = Date.now();
      const first = await gateReserve(t.scripts, coupon.id, 'twice', firstAt);
      expect(first).toMatchObject({ status: 'RESERVED', seq: 2 });
      expect(await gateRelease(t.scripts, coupon.id, 'twice', 2, firstAt)).toBe('RELEASED');
      expect((await t.client.issueCoupon({ couponId: coupon.id, userId: 'x' })).seq).toBe(2n);
      const secondAt = Date.now() + 1;
      const second = await gateReserve(t.scripts, coupon.id, 'twice', secondAt);
      expect(second).toMatchObject({ status: 'RESERVED', seq: 3 });
      expect(await gateRelease(t.scripts, coupon.id, 'twice', 3, secondAt)).toBe('RELEASED');
      // Only now does the first "failed" record reach the broker.
      const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
      const codec = await registry.forTopic(t.topics.issue, CouponIssueRequestedSchema);
      const p = kafka().producer();
      await p.connect();
      await p.send({ topic: t.topics.issue, acks: -1, messages: [{ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId: 'twice', seq: 2n, requestedAt: timestampNow(), totalQuantity: 3n })) }] });
      await p.disconnect();
      expect((await t.client.issueCoupon({ couponId: coupon.id, userId: 'y' })).seq).toBe(3n);
      await until('3 rows', async () => (await ledger(coupon.id)).length === 3);
      await waitForCaughtUp(kafka(), t.env.KAFKA_ISSUER_GROUP, t.topics.issue);
      expect(await ledger(coupon.id)).toEqual([{ user_id: 'early', seq: 1 }, { user_id: 'x', seq: 2 }, { user_id: 'y', seq: 3 }]);
      expect(await readTopic(kafka(), t.topics.issueDlt, (key) => key === coupon.id)).toHaveLength(0);
    } finally { await t.close(); }
  });

  it('taken by the issuer before the release: the release is refused, the caller is told OK, and nothing is over-issued', { timeout: 120_000 }, async () => {
    const t = await setup('ambiguous-claimed');
    try {
      const coupon = await createCoupon(t.client, 3);
      const { seq, reservedAt } = await t.reserveAndSend(coupon.id, 'slow-ack');
      await until('the issuer to take it', async () => (await ledger(coupon.id)).length === 1);
      expect(await gateRelease(t.scripts, coupon.id, 'slow-ack', seq, reservedAt)).toBe('CLAIMED');
      expect((await t.client.issueCoupon({ couponId: coupon.id, userId: 'slow-ack' })).seq).toBe(BigInt(seq));
      const rest = await ask(t.client, coupon.id, ['p', 'q', 'r', 's']);
      expect(rest.filter((o) => o.ok)).toHaveLength(2);
      await until('3 rows', async () => (await ledger(coupon.id)).length === 3);
      await waitForCaughtUp(kafka(), t.env.KAFKA_ISSUER_GROUP, t.topics.issue);
      expect((await ledger(coupon.id)).map((x) => x.seq)).toEqual([1, 2, 3]);
      expect((await t.client.getCoupon({ couponId: coupon.id })).coupon!.status).toBe(CouponStatus.COMPLETE);
    } finally { await t.close(); }
  });
});

describe('Redis loses a coupon\'s gate state mid-sale', () => {
  it('refuses with UNAVAILABLE until the issuer has drained the topic, then rebuilds from the ledger and sells exactly the total', { timeout: 120_000 }, async () => {
    const env = { ...uniqueEnv('redis-loss'), PUBLISH_TIMEOUT_MS: '1000' };
    const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
    const api = await startService('api', env);
    const client = couponClient(api.address);
    let issuer: Awaited<ReturnType<typeof startService>> | undefined;
    try {
      const coupon = await createCoupon(client, 50);
      // 20 winners while no issuer runs: their records wait on the topic.
      const first = await ask(client, coupon.id, Array.from({ length: 20 }, (_, i) => `w${i}`));
      expect(first.every((o) => o.ok)).toBe(true);
      // A gap: seq 21 is reserved and released (a failed publish), seq 22 is sold after it.
      const scripts = new CouponScripts(r);
      const gapAt = Date.now();
      const gap = await gateReserve(scripts, coupon.id, 'gap-user', gapAt);
      expect(gap).toMatchObject({ status: 'RESERVED', seq: 21 });
      const after = await ask(client, coupon.id, ['w20']);
      expect(after[0]).toMatchObject({ ok: true, seq: 22 });
      expect(await gateRelease(scripts, coupon.id, 'gap-user', 21, gapAt)).toBe('RELEASED');
      // Redis restarts: this coupon's keys are gone.
      const keys = await r.keys(`coupon:{${coupon.id}}:*`);
      expect(keys.length).toBeGreaterThan(0);
      await r.del(...keys);

      const refused = await ask(client, coupon.id, ['too-early']);
      expect(refused[0]).toMatchObject({ ok: false, code: grpc.status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
      expect(await r.exists(couponKeys(coupon.id).meta)).toBe(0);

      issuer = await startService('issuer', env);
      await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
      expect(await ledger(coupon.id)).toHaveLength(21);

      // Rebuilt from the ledger: old winners keep their seq; the gap (21) and 23..50 go to new
      // winners, and no more.
      // The rebuild also waits until nothing published before the loss can still land
      // (PUBLISH_TIMEOUT_MS + 2 s after the loss was noticed).
      const again = await until('the gate rebuilt', async () => {
        const [o] = await ask(client, coupon.id, ['w3']);
        return o!.ok || o!.reason !== 'BACKEND_UNAVAILABLE' ? o : undefined;
      }, 30_000, 250);
      expect(again).toMatchObject({ ok: true, seq: (first[3] as { seq: number }).seq });
      const rest = await ask(client, coupon.id, Array.from({ length: 60 }, (_, i) => `n${i}`));
      const won = rest.filter((o): o is Extract<Outcome, { ok: true }> => o.ok);
      expect(won).toHaveLength(29);
      expect(won.map((o) => o.seq).sort((a, b) => a - b)).toEqual([21, ...Array.from({ length: 28 }, (_, i) => i + 23)]);
      await until('50 rows', async () => (await ledger(coupon.id)).length === 50);
      expect((await ledger(coupon.id)).map((x) => x.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      const got = (await client.getCoupon({ couponId: coupon.id })).coupon!;
      expect(got.acceptedCount).toBe(50n);
      await until('COMPLETE', async () => (await client.getCoupon({ couponId: coupon.id })).coupon!.status === CouponStatus.COMPLETE);
    } finally {
      client.close();
      await Promise.all([api.stop(), issuer?.stop()]);
    }
  });
});
