// A dead letter must never block a coupon's rebuild for ever (DESIGN.md, "Redis loses everything":
// unreplayed dead letters still own their seqs, so a rebuild waits for them). Two ways out:
// - a record that can never own its seq (out of range, or its seq already another user's in the
//   ledger) does not block at all: replaying it only dead-letters it again under a new offset;
// - an operator discards one that can never be replayed (`npm run dlt:discard`), which records
//   who, why and when in dead_letters, lifts the block, and keeps the replay tool off it.
// The services run against a redis-server of this file's own, restarted (everything lost).
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';
import { EventRegistry } from '../../src/events/registry.ts';
import { blockingDeadLetters } from '../../src/store/dead-letters.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { run } from '../support/processes.ts';
import { createCoupon } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { config, db as newDb, kafka, readTopic, until, waitForCaughtUp } from '../support/stack.ts';

const s = fileServices('dlt-resolve', { PUBLISH_TIMEOUT_MS: '2000', RECOVERY_STALE_MS: '10000', ISSUE_MAX_ATTEMPTS: '2', ISSUE_BACKOFF_MS: '100' }, { ownRedis: true });
const { env, topics } = s;
const db = newDb();
const k = kafka();
afterAll(async () => { await db.destroy(); });

type Answer = { ok: true; seq: number } | { ok: false; reason: string; message: string };
const issue = (couponId: string, userId: string) => s.client.issueCoupon({ couponId, userId }).then(
  (res): Answer => ({ ok: true, seq: Number(res.seq) }),
  (err: unknown): Answer => { if (!(err instanceof CouponCallError)) throw err; return { ok: false, reason: err.reason, message: err.message }; });

/** Retries BACKEND_UNAVAILABLE (the rebuild is waiting) until another answer, or gives the last one. */
async function issueUntilDecided(couponId: string, userId: string, timeoutMs: number): Promise<Answer> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await issue(couponId, userId);
    if (answer.ok || answer.reason !== 'BACKEND_UNAVAILABLE' || Date.now() > deadline) return answer;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');
const deadLetters = (couponId: string) => db('dead_letters').where({ topic: topics.issue, coupon_id: couponId }).orderBy('offset')
  .select<{ partition: number; offset: number; reason: string; user_id: string | null; seq: number | null; replayed_at: Date | null; discarded_at: Date | null; discarded_by: string | null; discard_reason: string | null }[]>('*');
const replay = async () => {
  const out = await run(process.execPath, ['src/bin/dlt-replay.ts'], env);
  expect(out.code, out.stderr).toBe(0);
  return JSON.parse(out.stdout.trim().split('\n').at(-1)!) as { replayed: number; skippedDiscarded: number };
};
const discard = (...args: string[]) => run(process.execPath, ['src/bin/dlt-discard.ts', ...args], env);

async function issuedTo(couponId: string, users: string[]) {
  for (const userId of users) expect(await issue(couponId, userId)).toMatchObject({ ok: true });
  await until(`${users.length} rows`, async () => (await ledger(couponId)).length === users.length, 30_000);
}

describe('a dead letter that can never own its seq', () => {
  it('does not block the rebuild, even dead-lettered again by a replay: the seq it names is out of range or another user\'s', { timeout: 120_000 }, async () => {
    const coupon = await createCoupon(s.client, 4);
    await issuedTo(coupon.id, ['first', 'second']);
    await s.redis.restart();
    // Records no gate could have accepted (a producer's bug, or a forged record) reach the issuer
    // while the gate is lost: one names seq 1, which the ledger holds for another user; one a seq
    // beyond the coupon's 4 units.
    const codec = await new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY }).forTopic(topics.issue, CouponIssueRequestedSchema);
    const record = (userId: string, seq: bigint) => ({ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId, seq, requestedAt: timestampNow(), totalQuantity: 4n })) });
    const producer = k.producer();
    await producer.connect();
    await producer.send({ topic: topics.issue, acks: -1, messages: [record('intruder', 1n), record('outsider', 99n)] });
    await producer.disconnect();
    await until('both dead-lettered', async () => (await deadLetters(coupon.id)).length === 2, 30_000);
    expect((await deadLetters(coupon.id)).map((d) => [d.reason, d.user_id, d.seq]).sort()).toEqual([['SEQ_TAKEN', 'intruder', 1], ['UNKNOWN_COUPON_OR_SEQ', 'outsider', 99]]);

    // An operator replays them, as the runbook says for any dead letter: they fail again, and are
    // dead-lettered again under new offsets.
    expect(await replay()).toMatchObject({ replayed: 2 });
    await until('dead-lettered again', async () => (await deadLetters(coupon.id)).length === 4, 30_000);
    const unresolved = (await deadLetters(coupon.id)).filter((d) => !d.replayed_at);
    expect(unresolved.map((d) => [d.reason, d.user_id, d.seq]).sort()).toEqual([['SEQ_TAKEN', 'intruder', 1], ['UNKNOWN_COUPON_OR_SEQ', 'outsider', 99]]);

    // The gate is rebuilt once nothing from before the loss can still land; neither blocks it.
    expect(await issueUntilDecided(coupon.id, 'newcomer', 40_000)).toEqual({ ok: true, seq: 3 });
    expect(await s.redis.client().exists(couponKeys(coupon.id).meta)).toBe(1);
    await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue);
    await until('newcomer issued', async () => (await ledger(coupon.id)).length === 3, 30_000);
    expect(await ledger(coupon.id)).toEqual([{ user_id: 'first', seq: 1 }, { user_id: 'second', seq: 2 }, { user_id: 'newcomer', seq: 3 }]);
  });
});

describe('npm run dlt:discard', () => {
  it('gives up a dead letter that still owns a seq: recorded with who, why and when, the rebuild proceeds, and the replay leaves it alone', { timeout: 150_000 }, async () => {
    const coupon = await createCoupon(s.client, 3);
    await issuedTo(coupon.id, ['first']);

    // The ledger refuses one user's row: the issuer dead-letters the record of a user told OK with seq 2.
    const trigger = `refuse_${coupon.id.replaceAll('-', '')}`;
    await db.raw(`CREATE FUNCTION ${trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      IF NEW.coupon_id = '${coupon.id}' AND NEW.user_id = 'refused' THEN RAISE EXCEPTION 'the ledger refuses this row (test)'; END IF;
      RETURN NEW; END $$`);
    await db.raw(`CREATE TRIGGER ${trigger} BEFORE INSERT ON user_coupons FOR EACH ROW EXECUTE FUNCTION ${trigger}()`);
    let dead: Awaited<ReturnType<typeof deadLetters>>[number] | undefined;
    try {
      expect(await issue(coupon.id, 'refused')).toEqual({ ok: true, seq: 2 });
      [dead] = await until('dead-lettered', async () => { const d = await deadLetters(coupon.id); return d.length === 1 ? d : undefined; }, 30_000);
    } finally {
      await db.raw(`DROP TRIGGER ${trigger} ON user_coupons`);
      await db.raw(`DROP FUNCTION ${trigger}()`);
    }
    expect(dead!).toMatchObject({ reason: 'ATTEMPTS_EXHAUSTED', user_id: 'refused', seq: 2, discarded_at: null });
    const id = `${topics.issue}/${dead!.partition}/${dead!.offset}`;
    const [onTopic] = await readTopic(k, topics.issueDlt, (key) => key === coupon.id);
    expect(`${onTopic!.headers['x-source-topic']}/${onTopic!.headers['x-source-partition']}/${onTopic!.headers['x-source-offset']}`).toBe(id);

    await s.redis.restart();
    const blocked = await until('the rebuild refused for the dead letter', async () => {
      const answer = await issue(coupon.id, 'newcomer');
      expect(answer).toMatchObject({ ok: false, reason: 'BACKEND_UNAVAILABLE' });
      return !answer.ok && /dead-letter topic/.test(answer.message) ? answer.message : undefined;
    }, 30_000, 250);
    // (grpc-js hands the status message over percent-encoded.)
    expect(decodeURIComponent(blocked)).toMatch(/replayed \(npm run dlt:replay\) or, if they never can be, discarded \(npm run dlt:discard\)/);

    // Refused: nothing to name, or no reason given.
    expect((await discard('--id', id)).code).toBe(2);
    expect((await discard('--id', 'not-an-id', '--reason', 'x')).code).toBe(2);
    const unknown = await discard('--id', `${topics.issue}/0/999999999`, '--reason', 'x');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no dead letter');

    const done = await discard('--id', id, '--reason', 'user refused by the ledger; compensated by hand (ticket OPS-1)', '--by', 'test-operator');
    expect(done.code, done.stderr).toBe(0);
    expect(JSON.parse(done.stdout)).toMatchObject({ id, outcome: 'DISCARDED', couponId: coupon.id, userId: 'refused', seq: 2, discardedBy: 'test-operator' });
    const [row] = await deadLetters(coupon.id);
    expect(row).toMatchObject({ discarded_by: 'test-operator', discard_reason: 'user refused by the ledger; compensated by hand (ticket OPS-1)', replayed_at: null });
    expect(row!.discarded_at).toBeInstanceOf(Date);
    // Again: the first resolution stands.
    const again = await discard('--id', id, '--reason', 'second thoughts', '--by', 'someone-else');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ outcome: 'ALREADY_DISCARDED', discardedBy: 'test-operator' });

    // The rebuild no longer waits for it.
    const newcomer = await issueUntilDecided(coupon.id, 'newcomer', 40_000);
    expect(newcomer).toMatchObject({ ok: true });
    await until('newcomer issued', async () => (await ledger(coupon.id)).some((r) => r.user_id === 'newcomer'), 30_000);

    // The replay passes over it: it is not put back, so it is neither issued nor dead-lettered again.
    // (Other records it replays are the first test's, on this file's topics.)
    expect(await replay()).toMatchObject({ skippedDiscarded: 1 });
    await waitForCaughtUp(k, env.KAFKA_ISSUER_GROUP, topics.issue);
    expect((await ledger(coupon.id)).map((r) => r.user_id)).toEqual(['first', 'newcomer']);
    expect(await deadLetters(coupon.id)).toHaveLength(1);
  });
});

describe('which dead letters a rebuild waits for (blockingDeadLetters)', () => {
  it('only those that may still own their seq: unresolved, and with a seq unknown, or in range and free for their user', async () => {
    const couponId = randomUUID();
    await db('coupons').insert({ id: couponId, name: 'blocking rule', total_quantity: 5, opens_at: new Date() });
    await db('user_coupons').insert([
      { coupon_id: couponId, user_id: 'holder-1', seq: 1, requested_at: new Date() },
      { coupon_id: couponId, user_id: 'holder-2', seq: 2, requested_at: new Date() },
    ]);
    // Offsets far past what this file's real dead letters on the same topic use.
    let offset = 1_000_000;
    const dead = (fields: Record<string, unknown>, topic = topics.issue) => ({ topic, partition: 0, offset: offset++, coupon_id: couponId, reason: 'ATTEMPTS_EXHAUSTED', ...fields });
    const now = new Date();
    await db('dead_letters').insert([
      dead({ user_id: null, seq: null, reason: 'BAD_MAGIC' }), // blocks: its seq is unknown
      dead({ user_id: 'waiting', seq: 3 }), // blocks: seq 3 is free, and so is its user
      dead({ user_id: 'taken', seq: 1, reason: 'SEQ_TAKEN' }), // seq 1 is holder-1's
      dead({ user_id: 'outside', seq: 6, reason: 'UNKNOWN_COUPON_OR_SEQ' }), // beyond 5 units
      dead({ user_id: 'zero', seq: 0, reason: 'INVALID_EVENT' }), // below 1
      dead({ user_id: 'holder-2', seq: 4 }), // its user already holds seq 2
      dead({ user_id: 'replayed', seq: 4, replayed_at: now }),
      dead({ user_id: 'discarded', seq: 5, discarded_at: now, discarded_by: 'op', discard_reason: 'test' }),
      dead({ user_id: null, seq: null }, topics.redemption), // another topic's
    ]);
    expect(await blockingDeadLetters(db, topics.issue, couponId)).toBe(2);
    expect(await blockingDeadLetters(db, topics.redemption, couponId)).toBe(1);
  });
});
