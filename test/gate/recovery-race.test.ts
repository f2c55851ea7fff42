// The recovery loop republishes a reservation whose publish never finished, and then drops exactly
// that reservation from the pending journal. Meanwhile the same user's original request may give up,
// release the slot, and the user may reserve again (another seq, since someone else took the freed
// one). Whatever point of the pass that happens at, the pass must neither drop the newer
// reservation (its failed publish would then find no entry and answer OK for a record nobody
// published) nor publish the newer seq with the older reservation's time.
// Every interleaving is tried: the release before any one of the pass's Redis calls, the new
// reservation before the same or any later one. Real Redis (a private one); the publisher records.
import { randomUUID } from 'node:crypto';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import type { BatchingPublisher } from '../../src/events/publisher.ts';
import { recoverStaleReservations, type GateRecoveryDeps } from '../../src/gate/recovery.ts';
import { ActiveCoupons } from '../../src/store/active-coupons.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateArm, gateRelease, gateReserve, type GateMeta } from '../../src/gate/gate-scripts.ts';
import { startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { testLog } from '../support/stack.ts';

let redis: PrivateRedis;
beforeAll(async () => { redis = await startPrivateRedis(); });
afterAll(async () => { await redis?.stop(); });

const NOW = Date.now();
const STALE_MS = 30_000;
const RESERVED_FIRST = NOW - 60_000;
const RESERVED_AGAIN = NOW - 1_000;
const meta: GateMeta = { total: 5, opensMs: 0, closesMs: 0, validUntilMs: 0, expireAtMs: 0, retentionMs: 1_000 };

/**
 * The client as the pass sees it: before its n-th call goes out, `before(n)` runs (and is awaited),
 * after every earlier one has finished, even for calls issued in the same tick.
 */
function interleaved(client: Redis, before: (n: number) => Promise<void>): Redis {
  let calls = 0;
  let chain = Promise.resolve();
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const fn = value as (...a: unknown[]) => unknown;
      if (prop === 'defineCommand') return fn.bind(target);
      return async (...args: unknown[]) => {
        const n = ++calls;
        chain = chain.then(() => before(n));
        await chain;
        return fn.apply(target, args);
      };
    },
  });
}

interface Sent { userId: string; seq: number; requestedAtMs: number }

/** One recovery pass with the release before call `releaseAt` and the new reservation before call `reserveAt` (0: never). */
async function race(releaseAt: number, reserveAt: number) {
  const couponId = randomUUID();
  const active = new ActiveCoupons(redis.client, `gate:active:test-${randomUUID()}`, () => NOW);
  const direct = new CouponScripts(redis.client, { active });
  await gateArm(direct, couponId, meta);
  expect(await gateReserve(direct, couponId, 'A', RESERVED_FIRST)).toMatchObject({ status: 'RESERVED', seq: 1 });

  let released: string | undefined;
  let reservedAgain: number | undefined;
  const release = async () => { released = await gateRelease(direct, couponId, 'A', 1, RESERVED_FIRST); };
  const reserveAgain = async () => {
    if (released !== 'RELEASED') return;
    // Someone else takes the freed seq, so A's new reservation holds another one.
    expect(await gateReserve(direct, couponId, 'B', RESERVED_AGAIN)).toMatchObject({ status: 'RESERVED', seq: 1 });
    const again = await gateReserve(direct, couponId, 'A', RESERVED_AGAIN);
    expect(again).toMatchObject({ status: 'RESERVED', seq: 2 });
    reservedAgain = 2;
  };
  let calls = 0;
  const client = interleaved(redis.client, async (n) => {
    calls = n;
    if (n === releaseAt) await release();
    if (n === reserveAt) await reserveAgain();
  });
  const sent: Sent[] = [];
  const publisher = { send: () => Promise.resolve() } as unknown as BatchingPublisher;
  const deps: GateRecoveryDeps = {
    redis: client, scripts: new CouponScripts(client), active, topic: 'test', log: testLog, now: () => NOW,
    publisher,
    encoder: { encode: (m) => { sent.push({ userId: m.userId, seq: Number(m.seq), requestedAtMs: m.requestedAt ? Number(timestampMs(m.requestedAt)) : 0 }); return Buffer.from('record'); } },
  };
  await recoverStaleReservations(deps, STALE_MS);
  if (releaseAt > calls) await release();
  if (reserveAt > calls) await reserveAgain();
  return { couponId, calls, sent, released, reservedAgain };
}

describe('a recovery pass racing a release and a new reservation of the same user', () => {
  it('at every point of the pass, drops only the reservation it republished, and publishes each seq with its own reservation time', async () => {
    const { calls } = await race(0, 0);
    const points = calls + 1;
    let newerSeen = 0;
    for (let releaseAt = 1; releaseAt <= points; releaseAt++) {
      for (let reserveAt = releaseAt; reserveAt <= points; reserveAt++) {
        const where = `release before call ${releaseAt}, reserve again before call ${reserveAt}`;
        const t = await race(releaseAt, reserveAt);
        const k = couponKeys(t.couponId);
        // Whatever the pass published for A was the first reservation: seq 1, reserved first.
        for (const s of t.sent.filter((x) => x.userId === 'A')) expect(s, where).toEqual({ userId: 'A', seq: 1, requestedAtMs: RESERVED_FIRST });
        if (t.released === 'CLAIMED') {
          // The pass made the first reservation durable before the release: the release answers OK
          // only because its record was republished.
          expect(t.sent, where).toContainEqual({ userId: 'A', seq: 1, requestedAtMs: RESERVED_FIRST });
          continue;
        }
        expect(t.released, where).toBe('RELEASED');
        expect(t.reservedAgain, where).toBe(2);
        newerSeen++;
        // The newer reservations are not stale and still wait for their own publishes.
        expect(await redis.client.zscore(k.pending, 'A'), where).toBe(String(RESERVED_AGAIN));
        expect(await redis.client.zscore(k.pending, 'B'), where).toBe(String(RESERVED_AGAIN));
        // A's new publish fails: its slot is released (not "CLAIMED", an OK with nothing published).
        expect(await gateRelease(new CouponScripts(redis.client), t.couponId, 'A', 2, RESERVED_AGAIN), where).toBe('RELEASED');
      }
    }
    expect(newerSeen).toBeGreaterThan(0);
  });
});
