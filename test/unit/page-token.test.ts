// The list RPCs' page tokens (src/catalog/page-token.ts) with no database, on their own and as
// ListUserCoupons uses them (there the query is a stand-in that records how it was built and
// answers fixed rows). A token is base64url JSON of the last row's time (to the microsecond), its
// uuid, and the listing it belongs to: for ListUserCoupons, the user.
import { describe, expect, it } from 'vitest';
import { decodePageToken, encodePageToken, formatUs } from '../../src/catalog/page-token.ts';
import { listUserCoupons } from '../../src/catalog/user-coupons.ts';
import { DomainError } from '../../src/domain/errors.ts';
import type { Db } from '../../src/store/db.ts';

const A = '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70';
const B = '5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const C = '0b7b1c54-9f3e-4d55-8f43-5f1f6bd1b001';

const token = (json: string) => Buffer.from(json, 'utf8').toString('base64url');

interface Row { coupon_id: string; user_id: string; seq: number; issued_at: Date; issued_at_us: string; order_id: string | null; redeemed_at: Date | null }
const row = (couponId: string, issuedAtUs: string): Row => ({
  coupon_id: couponId, user_id: 'alice', seq: 1, issued_at: new Date(issuedAtUs), issued_at_us: issuedAtUs, order_id: null, redeemed_at: null,
});

/** A stand-in for the knex query builder: every call is recorded and chains; awaiting it answers `rows`. */
function fakeDb(rows: Row[]) {
  const calls: { method: string; args: unknown[] }[] = [];
  let queried = false;
  const builder: object = new Proxy({}, {
    get(_target, method: string) {
      if (method === 'then') {
        queried = true;
        return (resolve: (value: Row[]) => void) => resolve(rows);
      }
      return (...args: unknown[]) => { calls.push({ method, args }); return builder; };
    },
  });
  const db = Object.assign(() => builder, { raw: (sql: string) => ({ sql }) }) as unknown as Db;
  return { db, calls, queried: () => queried };
}

describe('encodePageToken and decodePageToken', () => {
  const last = { at: '2026-03-01T10:00:00.000001Z', id: B };

  it('write the time, the uuid, then the scope, and read back the same keyset for the same scope', () => {
    const written = encodePageToken(last, { u: 'alice' });
    expect(written).toBe(token(`{"t":"2026-03-01T10:00:00.000001Z","c":"${B}","u":"alice"}`));
    expect(decodePageToken(written, { u: 'alice' }, 'for this user')).toEqual(last);
  });

  it('refuse a token of another scope with INVALID_PAGE_TOKEN, saying why', () => {
    const written = encodePageToken(last, { f: 'OPEN' });
    const err = (() => { try { decodePageToken(written, { f: 'CLOSED' }, 'for these filters'); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(DomainError);
    expect((err as DomainError).reason).toBe('INVALID_PAGE_TOKEN');
    expect((err as DomainError).message).toBe('page_token was not issued by this server for these filters');
  });
});

describe('formatUs', () => {
  it('writes microseconds since the epoch as a UTC time with six decimals', () => {
    expect(formatUs(0n)).toBe('1970-01-01T00:00:00.000000Z');
    expect(formatUs(1_772_359_200_000_001n)).toBe('2026-03-01T10:00:00.000001Z');
    expect(formatUs(1_772_359_200_123_456n)).toBe('2026-03-01T10:00:00.123456Z');
  });
});

describe('the page token of ListUserCoupons', () => {
  it('is written for the last row of a full page, and empty on the last page', async () => {
    const first = fakeDb([row(A, '2026-03-01T10:00:00.123456Z'), row(B, '2026-03-01T10:00:00.000001Z'), row(C, '2026-02-28T23:59:59.999999Z')]);
    const page = await listUserCoupons(first.db, 'alice', 2, '');
    expect(page.items.map((i) => i.couponId)).toEqual([A, B]);
    expect(page.nextToken).toBe(token(`{"t":"2026-03-01T10:00:00.000001Z","c":"${B}","u":"alice"}`));

    const last = fakeDb([row(C, '2026-02-28T23:59:59.999999Z')]);
    expect((await listUserCoupons(last.db, 'alice', 2, page.nextToken)).nextToken).toBe('');
  });

  it('is read back as the keyset to continue after: that row\'s issued_at to the microsecond, then its coupon id', async () => {
    const next = fakeDb([]);
    await listUserCoupons(next.db, 'alice', 2, token(`{"t":"2026-03-01T10:00:00.000001Z","c":"${B}","u":"alice"}`));
    expect(next.calls.filter((c) => c.method === 'andWhereRaw')).toEqual([
      { method: 'andWhereRaw', args: ['(issued_at, coupon_id) < (?::timestamptz, ?::uuid)', ['2026-03-01T10:00:00.000001Z', B]] },
    ]);
  });

  it('starts from the newest row without one', async () => {
    const first = fakeDb([]);
    await listUserCoupons(first.db, 'alice', 2, '');
    expect(first.calls.filter((c) => c.method === 'andWhereRaw')).toEqual([]);
  });

  const refused: [string, string][] = [
    ['issued to another user', token(`{"t":"2026-03-01T10:00:00.000001Z","c":"${B}","u":"bob"}`)],
    ['without a user', token(`{"t":"2026-03-01T10:00:00.000001Z","c":"${B}"}`)],
    ['with a time to the millisecond', token(`{"t":"2026-03-01T10:00:00.123Z","c":"${B}","u":"alice"}`)],
    ['with a day that does not exist', token(`{"t":"2026-02-30T10:00:00.000001Z","c":"${B}","u":"alice"}`)],
    ['with month 13', token(`{"t":"2026-13-01T10:00:00.000001Z","c":"${B}","u":"alice"}`)],
    ['with year 0, which PostgreSQL refuses', token(`{"t":"0000-01-01T00:00:00.000000Z","c":"${B}","u":"alice"}`)],
    ['with a year before 1970', token(`{"t":"1969-12-31T23:59:59.999999Z","c":"${B}","u":"alice"}`)],
    ['with SQL in the time', token(`{"t":"2026-03-01T10:00:00.000001Z' OR 1=1 --","c":"${B}","u":"alice"}`)],
    ['with a coupon id that is not a UUID', token('{"t":"2026-03-01T10:00:00.000001Z","c":"not-a-uuid","u":"alice"}')],
    ['with a number for the time', token(`{"t":1772359200000,"c":"${B}","u":"alice"}`)],
    ['of JSON null', token('null')],
    ['that is not JSON', token('{"t":')],
    ['that is not base64url at all', '!!!'],
  ];

  it.each(refused)('is refused %s: INVALID_PAGE_TOKEN, before any query', async (_what, pageToken) => {
    const db = fakeDb([row(A, '2026-03-01T10:00:00.123456Z')]);
    const err = await listUserCoupons(db.db, 'alice', 2, pageToken).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DomainError);
    expect((err as DomainError).reason).toBe('INVALID_PAGE_TOKEN');
    expect((err as DomainError).message).toBe('page_token was not issued by this server for this user');
    expect(db.queried()).toBe(false);
  });
});
