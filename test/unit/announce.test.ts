// coupon.v1.issued's pure parts (src/issuer/announce.ts, src/issuer/issue-batch.ts owedBy): the
// event id is a standard UUIDv5, the same for every delivery of one ledger row and different for
// every other row; the event carries the row; and a batch owes announcements only for the rows it
// inserted.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { ISSUED_EVENT_NAMESPACE, issuedEvent, issuedEventId, uuidV5 } from '../../src/issuer/announce.ts';
import { owedBy } from '../../src/issuer/issue-batch.ts';
import type { IssueResultRow } from '../../src/store/ledger.ts';

const A = '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70';
const ISSUED = new Date('2026-03-01T10:00:06.123Z');

describe('uuidV5', () => {
  it('matches RFC 9562 (the DNS namespace example other languages give)', () => {
    // Python: uuid.uuid5(uuid.NAMESPACE_DNS, 'python.org')
    expect(uuidV5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'python.org')).toBe('886313e1-3b8a-5372-9b90-0c9aee199e5d');
  });
});

describe('issuedEventId', () => {
  it('is the same for one row on every call, a version-5 UUID in its own namespace', () => {
    const id = issuedEventId(A, 7, 'alice');
    expect(issuedEventId(A, 7n, 'alice')).toBe(id);
    expect(id).toBe(uuidV5(ISSUED_EVENT_NAMESPACE, `${A}:7:alice`));
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('differs for another seq, another user or another coupon', () => {
    const ids = [issuedEventId(A, 7, 'alice'), issuedEventId(A, 8, 'alice'), issuedEventId(A, 7, 'bob'), issuedEventId('5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d', 7, 'alice'),
      // A user id with the separator in it is still one name: the user comes last.
      issuedEventId(A, 7, 'alice:8'), issuedEventId(A, 78, 'alice')];
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('issuedEvent', () => {
  it("carries the ledger row's coupon, user, seq and issued_at, and its event id", () => {
    const event = issuedEvent({ coupon_id: A, user_id: 'alice', seq: 7, issued_at: ISSUED });
    expect([event.couponId, event.userId, event.seq, event.eventId]).toEqual([A, 'alice', 7n, issuedEventId(A, 7, 'alice')]);
    expect(timestampDate(event.issuedAt!).getTime()).toBe(ISSUED.getTime());
  });
});

describe('owedBy', () => {
  const row = (userId: string, seq: number, inserted: boolean | null, released = false): IssueResultRow =>
    ({ coupon_id: A, user_id: userId, seq, issued_at: inserted === null ? null : ISSUED, inserted, requested_at: null, released });

  it('owes an announcement for each row inserted now, and none for a row the ledger held before, a refused record or a released one', () => {
    const owed = owedBy([row('new', 1, true), row('redelivered', 2, false), row('unknown-seq', 99, null), row('released', 3, null, true), row('also-new', 4, true)]);
    expect(owed).toEqual([
      { coupon_id: A, user_id: 'new', seq: 1, issued_at: ISSUED },
      { coupon_id: A, user_id: 'also-new', seq: 4, issued_at: ISSUED },
    ]);
  });

  it('owes nothing for a batch that is all redeliveries', () => {
    expect(owedBy([row('a', 1, false), row('b', 2, false)])).toEqual([]);
  });
});
