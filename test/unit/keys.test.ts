// The Redis key layout (src/store/keys.ts) and each script's KEYS (src/store/scripts.ts), as pure
// functions: the names written in the layout, one hash tag per coupon, and KEYS that match what
// each .lua file reads.
import { describe, expect, it } from 'vitest';
import {
  activeCouponsKey, allCouponKeys, couponKeys, retainedCouponKeys, legacyCouponIndexKey, loadTokenKey, lossKeys, parseRedemptionValue, stagedFreeKey,
} from '../../src/store/keys.ts';
import { scriptKeys, scriptSource, type KeyTarget, type ScriptName } from '../../src/store/scripts.ts';

const ID = '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70';
const P = `coupon:{${ID}}`;
const ALL = [
  `${P}:meta`, `${P}:winners`, `${P}:next`, `${P}:free`, `${P}:pending`, `${P}:tombstones`, `${P}:claimed`,
  `${P}:issued`, `${P}:redeem`, `${P}:cancelled`, `${P}:outbox`, `${P}:redeem-loaded`, `${P}:rebuild-after`, `${P}:redeem-load-after`,
];
// The keys that share the retention deadline: all but the two loss markers, which keep their own expiry.
const RETAINED = ALL.filter((key) => !key.endsWith(':rebuild-after') && !key.endsWith(':redeem-load-after'));

describe('a coupon\'s keys', () => {
  it('are named as the layout says, `released` being the tombstones set', () => {
    const k = couponKeys(ID);
    expect([k.meta, k.winners, k.next, k.free, k.pending, k.released, k.claimed]).toEqual(ALL.slice(0, 7));
    expect([k.issued, k.redeem, k.cancelled, k.outbox, k.redeemLoaded, k.rebuildAfter, k.redeemLoadAfter]).toEqual(ALL.slice(7));
  });

  it('are all 14 listed by allCouponKeys, and the 12 that share the retention deadline by retainedCouponKeys', () => {
    expect(allCouponKeys(ID)).toEqual(ALL);
    expect(retainedCouponKeys(ID)).toEqual(ALL.slice(0, 12));
    expect(RETAINED).toHaveLength(12);
  });

  it('carry the coupon id as their only hash tag, so one script touches one Redis Cluster slot', () => {
    const keys = [...allCouponKeys(ID), stagedFreeKey(ID, 'tok'), loadTokenKey(ID, 'gate', 'tok'), loadTokenKey(ID, 'redemption', 'tok')];
    for (const key of keys) expect(key.slice(key.indexOf('{') + 1, key.indexOf('}')), key).toBe(ID);
  });

  it('give each load its own staged free list and token', () => {
    expect(stagedFreeKey(ID, 'tok')).toBe(`${P}:free:staging:tok`);
    expect(loadTokenKey(ID, 'gate', 'tok')).toBe(`${P}:rebuild:tok`);
    expect(loadTokenKey(ID, 'redemption', 'tok')).toBe(`${P}:redeem-load:tok`);
  });

  it('tell a lost state by its presence key, next to the marker of when it may be rebuilt', () => {
    expect(lossKeys(ID, 'gate')).toEqual({ present: `${P}:meta`, marker: `${P}:rebuild-after` });
    expect(lossKeys(ID, 'redemption')).toEqual({ present: `${P}:redeem-loaded`, marker: `${P}:redeem-load-after` });
  });
});

describe('the recovery loops\' indexes', () => {
  it('are one key per KAFKA_TOPIC_PREFIX, the bare name without one', () => {
    expect(activeCouponsKey('')).toBe('gate:active');
    expect(activeCouponsKey('test-1')).toBe('gate:active:test-1');
    expect(legacyCouponIndexKey('')).toBe('gate:coupons');
    expect(legacyCouponIndexKey('test-1')).toBe('gate:coupons:test-1');
  });
});

describe('parseRedemptionValue', () => {
  it('reads "<R|C>|<order id>|<version>|<at ms>", keeping an order id that contains "|" whole', () => {
    expect(parseRedemptionValue('R|order-1|3|1700000000000')).toEqual({ state: 'R', orderId: 'order-1', version: 3, atMs: 1_700_000_000_000 });
    expect(parseRedemptionValue('R|a|b|2|5')).toEqual({ state: 'R', orderId: 'a|b', version: 2, atMs: 5 });
    expect(parseRedemptionValue('C||2|0')).toEqual({ state: 'C', orderId: '', version: 2, atMs: 0 });
  });

  it.each([null, undefined, '', 'X|order|1|2', 'R|order|v|2', 'R|order|1|', 'R|order|1'])('reads %j as no redemption', (value) => {
    expect(parseRedemptionValue(value)).toBeUndefined();
  });
});

describe('each script\'s KEYS', () => {
  const load = { couponId: ID, token: 'tok' };
  const k = (...names: string[]) => names.map((n) => `${P}:${n}`);
  // Written from the KEYS[n] list at the top of each .lua file.
  const expected: { [N in ScriptName]: [target: KeyTarget<N>, keys: string[]] } = {
    gateLoad: [load, [...k('meta', 'winners', 'next', 'issued', 'free', 'free:staging:tok', 'rebuild:tok', 'rebuild-after'), ...RETAINED]],
    gateReserve: [ID, k('meta', 'winners', 'next', 'free', 'pending', 'issued', 'redeem')],
    gateConfirm: [ID, k('pending', 'winners')],
    gateStale: [ID, k('pending', 'winners')],
    gateRelease: [ID, k('winners', 'free', 'pending', 'tombstones', 'claimed', 'meta')],
    gateSoldOut: [ID, k('meta', 'winners', 'pending')],
    gateChange: [ID, [...k('meta', 'winners', 'next'), ...RETAINED]],
    issuerClaim: [ID, k('meta', 'winners', 'tombstones', 'claimed')],
    issuerMarkIssued: [ID, [...k('issued', 'winners', 'meta'), ...RETAINED]],
    redeem: [ID, k('meta', 'winners', 'issued', 'redeem', 'cancelled', 'outbox', 'redeem-loaded')],
    cancelRedemption: [ID, k('meta', 'winners', 'issued', 'redeem', 'cancelled', 'outbox', 'redeem-loaded')],
    restoreRedemption: [load, k('winners', 'issued', 'redeem', 'cancelled', 'redeem-loaded', 'meta', 'redeem-load:tok', 'redeem-load-after')],
    lossNoticed: [{ couponId: ID, state: 'redemption' }, k('redeem-loaded', 'redeem-load-after')],
    activePrune: ['gate:active:test-1', ['gate:active:test-1']],
  };

  it.each(Object.keys(expected) as ScriptName[])('%s takes the keys its script reads, in order', (name) => {
    const [target, keys] = expected[name];
    expect(scriptKeys(name, target as never)).toEqual(keys);
  });

  it.each(Object.keys(expected) as ScriptName[])('%s passes as many keys as its .lua file (with its libraries) reads', (name) => {
    const source = scriptSource(name);
    const [target] = expected[name];
    const count = scriptKeys(name, target as never).length;
    const highest = Math.max(...[...source.matchAll(/KEYS\[(\d+)\]/g)].map((m) => Number(m[1])));
    // gate-load.lua, gate-change.lua and issuer-mark-issued.lua read every retained key of the coupon
    // after their own, in a loop.
    const loop = /for i = (\d+), #KEYS do/.exec(source);
    if (loop) {
      expect(Number(loop[1])).toBe(highest + 1);
      expect(count).toBe(highest + RETAINED.length);
    } else {
      expect(count).toBe(highest);
    }
  });
});
