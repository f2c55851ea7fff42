// coupon.v1.issued against the real stack (docs/events.md#issued-coupons): one CouponIssued per
// ledger row, read back through the registry as a downstream consumer would; none for a redelivered
// issue record; a publish that fails is retried with an alert, never dropped; and across an issuer
// SIGKILL between the ledger commit and the publish, every row is still announced, with one event
// id per row, and the ledger owes nothing afterwards.
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { afterAll, describe, expect, it } from 'vitest';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { pino } from 'pino';
import { CouponIssuedSchema, type CouponIssued } from '../../gen/coupon/events/v1/issued_pb.js';
import { Alerter } from '../../src/events/alert.ts';
import { createPublishingKafka } from '../../src/events/kafka.ts';
import { BatchingPublisher, PublishError } from '../../src/events/publisher.ts';
import { EventRegistry } from '../../src/events/registry.ts';
import { partitionOfKey } from '../../src/events/topics.ts';
import { issuedEventId, startAnnouncer } from '../../src/issuer/announce.ts';
import { clearAnnouncements } from '../../src/store/issued-outbox.ts';
import { startService, run } from '../support/processes.ts';
import { createCoupon } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { config, db as newDb, kafka, readTopic, testLog, until, waitForCaughtUp } from '../support/stack.ts';

// A short staleness, so the outbox pass republishes within seconds of a crash (it must exceed the
// publish timeout: config.ts).
const s = fileServices('issued', { PUBLISH_TIMEOUT_MS: '2000', RECOVERY_STALE_MS: '3000', RECOVERY_INTERVAL_MS: '500' });
const { env, topics } = s;
const db = newDb();
const k = kafka();
const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
const decoder = registry.decoderFor(CouponIssuedSchema);
afterAll(() => db.destroy());

interface Ledger { user_id: string; seq: number; issued_at: Date }
const ledgerOf = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<Ledger[]>('user_id', 'seq', 'issued_at');
const owedFor = async (couponIds: string[]) => Number((await db('coupon_issued_outbox').whereIn('coupon_id', couponIds).count<{ n: string }[]>('* as n'))[0]!.n);

/** Every CouponIssued on the topic for these coupons, decoded as a consumer does, with its record's key and partition. */
async function issuedEvents(couponIds: string[]): Promise<{ event: CouponIssued; key: string | null; partition: number }[]> {
  const out: { event: CouponIssued; key: string | null; partition: number }[] = [];
  for (const r of await readTopic(k, topics.issued)) {
    const event = await decoder.decode(r.value);
    if (couponIds.includes(event.couponId)) out.push({ event, key: r.key, partition: r.partition });
  }
  return out;
}

async function sale(couponId: string, users: string[]) {
  const results = await Promise.all(users.map((userId) =>
    s.client.issueCoupon({ couponId, userId }, { timeoutMs: 60_000 }).then((res) => ({ userId, seq: Number(res.seq) }), () => undefined)));
  return results.filter((x) => x !== undefined);
}

const announcedMetric = async (path: string) => {
  const line = (await (await fetch(s.issuer.metricsUrl)).text()).split('\n').find((l) => l.startsWith(`coupon_issuer_announced_total{path="${path}"} `));
  return Number(line?.split(' ')[1] ?? 'NaN');
};

const UUID_V5 = /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The announcements of `couponId` match its ledger rows: each row at least once, every delivery of a row with one event id. */
function expectEveryRowAnnounced(couponId: string, ledger: Ledger[], events: { event: CouponIssued; key: string | null }[]) {
  const byId = Map.groupBy(events, (e) => e.event.eventId);
  expect(new Set(byId.keys())).toEqual(new Set(ledger.map((row) => issuedEventId(couponId, row.seq, row.user_id))));
  for (const row of ledger) {
    const deliveries = byId.get(issuedEventId(couponId, row.seq, row.user_id))!;
    expect(deliveries.length).toBeGreaterThanOrEqual(1);
    for (const { event, key } of deliveries) {
      expect(key).toBe(row.user_id);
      expect([event.couponId, event.userId, event.seq]).toEqual([couponId, row.user_id, BigInt(row.seq)]);
      expect(timestampDate(event.issuedAt!).getTime()).toBe(row.issued_at.getTime());
    }
  }
}

describe('CouponIssued for every coupon issued', () => {
  let coupon: { id: string };
  let winners: { userId: string; seq: number }[];

  it("a sale's N winners produce exactly N events, keyed by user id, with the ledger's fields and a UUIDv5 event id", { timeout: 120_000 }, async () => {
    const inlineBefore = await announcedMetric('inline');
    coupon = await createCoupon(s.client, 40);
    winners = await sale(coupon.id, Array.from({ length: 60 }, (_, i) => `fan-${i}`));
    expect(winners).toHaveLength(40);
    await until('40 rows', async () => (await ledgerOf(coupon.id)).length === 40);
    await until('nothing owed', async () => (await owedFor([coupon.id])) === 0);

    const events = await issuedEvents([coupon.id]);
    expect(events).toHaveLength(40);
    const ledger = await ledgerOf(coupon.id);
    expect(new Map(ledger.map((r) => [r.user_id, r.seq]))).toEqual(new Map(winners.map((w) => [w.userId, w.seq])));
    expectEveryRowAnnounced(coupon.id, ledger, events);
    for (const { event, key, partition } of events) {
      expect(event.eventId).toMatch(UUID_V5);
      // Keyed by user: one user's events share a partition, whichever coupon they won.
      expect(partition).toBe(partitionOfKey(topics.issued, key!, config.KAFKA_TOPIC_PARTITIONS));
    }
    expect(await announcedMetric('inline')).toBe(inlineBefore + 40);

    // The schema is in the registry under the project's compatibility rule.
    const level = await (await fetch(`${config.SCHEMA_REGISTRY_URL}/config/${topics.issued}-value`)).json() as { compatibilityLevel?: string; compatibility?: string };
    expect(level.compatibilityLevel ?? level.compatibility).toBe(config.SCHEMA_COMPATIBILITY);
    const latest = await (await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topics.issued}-value/versions/latest`)).json() as { schemaType: string; schema: string };
    expect(latest.schemaType).toBe('PROTOBUF');
    expect(latest.schema).toContain('message CouponIssued');
  });

  it('a redelivered issue record announces nothing: the ledger already held its row', { timeout: 120_000 }, async () => {
    const inlineBefore = await announcedMetric('inline');
    // The sale's own issue records, sent again byte for byte: what the issuer sees after a
    // rebalance or a replay of its topic.
    const records = await readTopic(k, topics.issue, (key) => key === coupon.id);
    expect(records).toHaveLength(40);
    const producer = k.producer();
    await producer.connect();
    await producer.send({ topic: topics.issue, acks: -1, messages: records.map((r) => ({ key: r.key, value: r.value })) });
    await producer.disconnect();
    await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue);
    // Past the outbox pass's staleness too: nothing was owed, so nothing comes late either.
    await new Promise((resolve) => setTimeout(resolve, Number(env.RECOVERY_STALE_MS) + 2 * Number(env.RECOVERY_INTERVAL_MS)));

    expect(await ledgerOf(coupon.id)).toHaveLength(40);
    expect(await owedFor([coupon.id])).toBe(0);
    expect(await issuedEvents([coupon.id])).toHaveLength(40);
    expect(await announcedMetric('inline')).toBe(inlineBefore);
  });

  it('the example consumer (npm run example:notify) prints each winner once, decoded through the registry', { timeout: 120_000 }, async () => {
    const out = await run('npm', ['run', '-s', 'example:notify', '--', '--group', `example-${randomUUID()}`, '--until-end'], env);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const lines = out.stdout.split('\n').filter((l) => l.includes(coupon.id));
    expect(lines.sort()).toEqual(winners.map((w) => `user ${w.userId} won coupon ${coupon.id} (#${w.seq})`).sort());
  });
});

describe('a publish that fails', () => {
  it('leaves the announcement owed, is retried by every pass with an alert after five in a row, and goes out once Kafka takes it', { timeout: 120_000 }, async () => {
    // This file's issuer would republish the rows below as well; the test's own announcer does.
    await s.issuer.stop();
    // Rows as the issuer's INSERT leaves them (store/ledger.ts), ten seconds old: older than the
    // pass below asks for, younger than any other test file's issuer republishes (30 s).
    const couponId = randomUUID();
    const issuedAt = new Date(Date.now() - 10_000);
    const owed = ['ann', 'bea', 'cy'].map((userId, i) => ({ coupon_id: couponId, user_id: userId, seq: i + 1, issued_at: issuedAt }));
    await db('coupon_issued_outbox').insert(owed);

    const logged: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => { logged.push(JSON.parse(line) as Record<string, unknown>); } });
    const publishing = createPublishingKafka(config.KAFKA_BROKERS, `test-${randomUUID().slice(0, 8)}`, testLog, 2_000);
    const publisher = new BatchingPublisher(publishing.producer, { lingerMs: 2, maxBatch: 100, timeoutMs: 2_000, fence: publishing.fence }, testLog);
    await publisher.connect();
    let refuse: (userId: string) => boolean = () => false;
    const announcer = startAnnouncer({
      db,
      send: (topic, message) => refuse(message.key) ? Promise.reject(new PublishError('Kafka refused the batch (injected)', false)) : publisher.send(topic, message),
      codec: await registry.forTopic(topics.issued, CouponIssuedSchema),
      alerter: new Alerter(log, undefined),
      log,
    }, { intervalMs: 3_600_000, staleMs: 5_000 });
    const alerts = (event: string) => logged.filter((l) => l.msg === event && l.topic === topics.issued);
    try {
      // One refused: the other two go out and are cleared; the refused one stays owed.
      refuse = (userId) => userId === 'cy';
      expect(await announcer.sweep(5_000)).toBeGreaterThanOrEqual(2);
      expect(await db('coupon_issued_outbox').where({ coupon_id: couponId }).pluck('user_id')).toEqual(['cy']);
      // Kafka refuses everything: four more passes, each leaves it owed; the fifth failure in a row alerts, once.
      refuse = () => true;
      for (let pass = 2; pass <= 5; pass++) {
        await announcer.sweep(5_000);
        expect(alerts('coupon.dependency.outage'), `after pass ${pass}`).toHaveLength(pass < 5 ? 0 : 1);
      }
      await announcer.sweep(5_000);
      expect(alerts('coupon.dependency.outage')).toHaveLength(1);
      expect(alerts('coupon.dependency.outage')[0]).toMatchObject({ alert: true, attempts: 5, during: 'announcing issued coupons' });
      expect(await owedFor([couponId])).toBe(1);
      // Kafka is back: the next pass announces it, clears it, and says the outage is over.
      refuse = () => false;
      expect(await announcer.sweep(5_000)).toBeGreaterThanOrEqual(1);
      expect(await owedFor([couponId])).toBe(0);
      expect(alerts('coupon.dependency.recovered')).toHaveLength(1);

      const events = await issuedEvents([couponId]);
      expect(events.map((e) => e.event.userId).sort()).toEqual(['ann', 'bea', 'cy']);
      expectEveryRowAnnounced(couponId, owed, events);
    } finally {
      await announcer.stop();
      await publisher.disconnect();
    }
  });
});

describe('the outbox', () => {
  it("clears a whole batch's announcements in one statement, beyond a statement's 65,535 parameters", async () => {
    // In a transaction that is rolled back: no issuer's pass ever sees these rows.
    const couponId = randomUUID();
    const rows = Array.from({ length: 35_000 }, (_, i) => ({ coupon_id: couponId, user_id: `bulk-${i}`, seq: i + 1 }));
    const rolledBack = new Error('rolled back on purpose');
    await expect(db.transaction(async (trx) => {
      await trx.raw('INSERT INTO coupon_issued_outbox SELECT ?::uuid, u, s, now() FROM unnest(?::text[], ?::bigint[]) AS t(u, s)', [couponId, rows.map((r) => r.user_id), rows.map((r) => r.seq)]);
      expect(await clearAnnouncements(trx, rows.slice(0, 34_999))).toBe(34_999);
      expect(await trx('coupon_issued_outbox').where({ coupon_id: couponId }).pluck('user_id')).toEqual(['bulk-34999']);
      throw rolledBack;
    })).rejects.toBe(rolledBack);
    expect(await owedFor([couponId])).toBe(0);
  });
});

describe('issuer SIGKILL between the ledger commit and the publish', () => {
  it('every row is announced at least once, each with one event id, and nothing is owed afterwards', { timeout: 240_000 }, async () => {
    await s.issuer.stop();
    // This issuer dies right after its first INSERT that wrote rows commits (FAILPOINT).
    s.issuer = await startService('issuer', { ...env, FAILPOINT: 'crash-after-ledger-write' });
    const died = s.issuer.child.exitCode !== null || s.issuer.child.signalCode !== null ? Promise.resolve() : once(s.issuer.child, 'exit');
    const coupon = await createCoupon(s.client, 200);
    const winners = await sale(coupon.id, Array.from({ length: 200 }, (_, i) => `crash-${i}`));
    expect(winners).toHaveLength(200);
    await died;
    expect(s.issuer.child.signalCode).toBe('SIGKILL');

    // The ledger holds the batch it committed, and owes every row of it: nothing was published.
    const atCrash = (await ledgerOf(coupon.id)).length;
    expect(atCrash).toBeGreaterThan(0);
    expect(await owedFor([coupon.id])).toBe(atCrash);
    expect(await issuedEvents([coupon.id])).toHaveLength(0);

    s.issuer = await startService('issuer', env);
    await until('200 rows', async () => (await ledgerOf(coupon.id)).length === 200, 120_000);
    await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue, 120_000);
    // The redelivered batch inserted nothing, so only the outbox pass can announce its rows.
    await until('nothing owed', async () => (await owedFor([coupon.id])) === 0, 60_000);
    expect(await announcedMetric('republished')).toBeGreaterThanOrEqual(atCrash);
    expect(s.issuer.logs.filter((l) => l.msg === 'republished issued coupons whose announcement had not finished').reduce((n, l) => n + Number(l.republished), 0)).toBeGreaterThanOrEqual(atCrash);

    const ledger = await ledgerOf(coupon.id);
    expect(new Map(ledger.map((r) => [r.user_id, r.seq]))).toEqual(new Map(winners.map((w) => [w.userId, w.seq])));
    expectEveryRowAnnounced(coupon.id, ledger, await issuedEvents([coupon.id]));
  });
});
