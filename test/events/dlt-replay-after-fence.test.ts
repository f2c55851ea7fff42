// A record whose caller was told OK, dead-lettered while a rebuild after a Redis loss waited for the
// issuer, and replayed as the runbook says once its cause is fixed, is issued with the seq its caller
// was told (docs/design.md, I3's one exception). The replay appends it after the rebuild's fence with
// its old requested_at, before the fence's bound, while the gate is unarmed (the rebuild waits for the
// dead letter): the ledger must judge it as any record, not drop it by the bound. The batch fails by
// a PostgreSQL trigger on this test's own user only (no outage: ISSUE_MAX_ATTEMPTS, then dead-lettered).
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { run, startService } from '../support/processes.ts';
import { afterRebuild, callError, createCoupon, decided } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { db as newDb, kafka, readTopic, until, waitForCaughtUp } from '../support/stack.ts';

const svc = fileServices('dlt-after-fence', { API_WORKERS: '1', PUBLISH_TIMEOUT_MS: '2000', ISSUE_MAX_ATTEMPTS: '2', ISSUE_BACKOFF_MS: '100' }, { ownRedis: true });
const { env, topics } = svc;
const db = newDb();
afterAll(async () => { await db.destroy(); });
const victim = `r-${randomUUID().slice(0, 8)}`;
const trigger = `test_fail_${victim.replaceAll('-', '_')}`;
afterAll(async () => {
  await db.raw(`DROP TRIGGER IF EXISTS ${trigger} ON user_coupons`).catch(() => undefined);
  await db.raw(`DROP FUNCTION IF EXISTS ${trigger}()`).catch(() => undefined);
});

const ledger = (couponId: string) => db('user_coupons').where({ coupon_id: couponId }).orderBy('seq').select<{ user_id: string; seq: number }[]>('user_id', 'seq');

describe('a dead letter from before a rebuild\'s fence, replayed after it', () => {
  it('is issued with the seq its caller was told', { timeout: 240_000 }, async () => {
    const coupon = await createCoupon(svc.client, 3, { validForMs: 3_600_000 });
    expect((await decided(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'a' }))).seq).toBe(1n);
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);

    // The issuer is behind (down); the victim is told OK with seq 2: its record is acknowledged.
    await svc.issuer.stop();
    const told = await decided(() => svc.client.issueCoupon({ couponId: coupon.id, userId: victim }));
    expect(told.seq).toBe(2n);

    // Redis loses the gate; a caller makes the rebuild append its fence (it then waits for the issuer).
    await svc.redis.restart();
    await until('the fence on the issue topic', async () => {
      await callError(svc.client.issueCoupon({ couponId: coupon.id, userId: 'probe' })).catch(() => undefined);
      const fences = (await readTopic(kafka(), topics.issue, (key) => key === coupon.id, true)).filter((m) => m.headers['coupon-fence'] !== undefined);
      return fences.length > 0 || undefined;
    }, 60_000, 1_000);

    // The victim's batch fails for a reason that is no outage (here a trigger), ISSUE_MAX_ATTEMPTS
    // times: it is dead-lettered, and then the issuer passes the fence and records its bound.
    await db.raw(`CREATE FUNCTION ${trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.user_id = '${victim}' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$`);
    await db.raw(`CREATE TRIGGER ${trigger} BEFORE INSERT ON user_coupons FOR EACH ROW EXECUTE FUNCTION ${trigger}()`);
    svc.issuer = await startService('issuer', env);
    await until('the dead letter', async () => (await db('dead_letters').where({ topic: topics.issue, coupon_id: coupon.id, user_id: victim }).first<{ offset: string } | undefined>()) ?? undefined, 60_000);
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);
    const fence = await db('coupon_fences').where({ coupon_id: coupon.id }).first<{ stale_before: Date } | undefined>();
    expect(fence, 'the issuer passed the fence and recorded its bound').toBeDefined();

    // The cause is fixed; the rebuild is blocked by the dead letter until the operator replays it.
    await db.raw(`DROP TRIGGER ${trigger} ON user_coupons`);
    const blocked = await callError(svc.client.issueCoupon({ couponId: coupon.id, userId: 'c' }));
    expect(blocked.reason).toBe('BACKEND_UNAVAILABLE');
    const replay = await run(process.execPath, ['src/bin/dlt-replay.ts'], env);
    expect(replay.code).toBe(0);
    await waitForCaughtUp(kafka(), env.KAFKA_ISSUER_GROUP, topics.issue);

    // The rebuild gives the next user the next free seq; the victim keeps seq 2 (I3).
    const c = await afterRebuild(() => svc.client.issueCoupon({ couponId: coupon.id, userId: 'c' }));
    expect(c.seq).toBe(3n);
    await until('c in the ledger', async () => (await ledger(coupon.id)).length === 3 || undefined, 30_000);
    expect(await ledger(coupon.id)).toEqual([{ user_id: 'a', seq: 1 }, { user_id: victim, seq: 2 }, { user_id: 'c', seq: 3 }]);
    expect((await decided(() => svc.client.issueCoupon({ couponId: coupon.id, userId: victim }))).seq).toBe(2n);
  });
});
