// issueBatch's pure steps (src/issuer/issue-batch.ts) with no stack: which records are poison
// before the gate is asked (validate), and what the ledger's answer means for each record that
// was written (classify, seqTaken).
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { CouponIssueRequestedSchema, type CouponIssueRequested } from '../../gen/coupon/events/v1/issue_pb.js';
import type { ConsumedRecord, Rejection } from '../../src/events/batch-consumer.ts';
import { classify, seqTaken, validate, type ClaimedWrite } from '../../src/issuer/issue-batch.ts';
import type { IssueResultRow } from '../../src/store/ledger.ts';

const A = '3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70';
const B = '5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const T1 = new Date('2026-03-01T10:00:00.000Z');
const T2 = new Date('2026-03-01T10:00:05.000Z');
const ISSUED = new Date('2026-03-01T10:00:06.000Z');

let offset = 0;
function record(couponId: string, userId: string, seq: bigint, requestedAt = T1): ConsumedRecord<CouponIssueRequested> {
  const value = create(CouponIssueRequestedSchema, { couponId, userId, seq, requestedAt: timestampFromDate(requestedAt), totalQuantity: 10n });
  return { value, key: couponId, partition: 0, offset: String(offset++), message: {} as ConsumedRecord<CouponIssueRequested>['message'] };
}
const write = (couponId: string, userId: string, seq: number, requestedAt = T1, unarmed = false): ClaimedWrite =>
  ({ record: record(couponId, userId, BigInt(seq), requestedAt), unarmed, requestedAt });

/** Rows as store/ledger.ts insertIssued returns them. */
const insertedNow = (w: ClaimedWrite): IssueResultRow => row(w, { issued_at: ISSUED, inserted: true });
const heldBefore = (w: ClaimedWrite): IssueResultRow => row(w, { issued_at: ISSUED, inserted: false });
const notWritten = (w: ClaimedWrite): IssueResultRow => row(w, { issued_at: null, inserted: null });
const releasedRecord = (w: ClaimedWrite): IssueResultRow => row(w, { issued_at: null, inserted: null, requested_at: w.requestedAt, released: true });
function row(w: ClaimedWrite, r: Partial<IssueResultRow>): IssueResultRow {
  const v = w.record.value;
  return { coupon_id: v.couponId, user_id: v.userId, seq: Number(v.seq), issued_at: null, inserted: null, requested_at: null, released: false, ...r };
}
const summary = (rejections: Rejection<CouponIssueRequested>[]) => rejections.map((r) => [r.record.value.userId, r.reason, r.error]);

describe('validate', () => {
  it('lets well-formed records through, with the coupon id in lower case', () => {
    const upper = record(A.toUpperCase(), 'alice', 1n);
    const { valid, rejected } = validate([upper, record(B, 'bob', 10_000_000n)]);
    expect(valid.map((r) => [r.value.couponId, r.value.userId])).toEqual([[A, 'alice'], [B, 'bob']]);
    expect(rejected).toEqual([]);
  });

  it('refuses, each on its own, what no gate could have written', () => {
    const { valid, rejected } = validate([
      record('not-a-uuid', 'alice', 1n),
      record(A, 'a|b', 1n),
      record(A, 'carol', 0n),
      record(A, 'dave', 10_000_001n),
      record(A, 'erin', 2n),
    ]);
    expect(valid.map((r) => r.value.userId)).toEqual(['erin']);
    expect(summary(rejected)).toEqual([
      ['alice', 'INVALID_EVENT', 'coupon_id is not a UUID'],
      ['a|b', 'INVALID_EVENT', 'user_id must contain only letters, marks, digits and - _ . : @ / + = (found U+007C)'],
      ['carol', 'INVALID_EVENT', 'seq 0 is not positive'],
      ['dave', 'UNKNOWN_COUPON_OR_SEQ', 'seq 10000001 is outside 1..total of any coupon'],
    ]);
  });
});

describe('classify', () => {
  it('holds what was written now and what the ledger already held, and counts only the first as inserted', () => {
    const fresh = write(A, 'alice', 1);
    const redelivered = write(A, 'bob', 2);
    const c = classify([fresh, redelivered], [insertedNow(fresh), heldBefore(redelivered)], []);
    expect(c.held.map((r) => [r.user_id, r.seq, r.inserted])).toEqual([['alice', 1, true], ['bob', 2, false]]);
    expect(c).toMatchObject({ rejected: [], unresolved: [], released: 0, inserted: 1 });
  });

  it('refuses a record of an unknown coupon or a seq outside 1..total', () => {
    const outside = write(B, 'alice', 11);
    const c = classify([outside], [notWritten(outside)], []);
    expect(summary(c.rejected)).toEqual([['alice', 'UNKNOWN_COUPON_OR_SEQ', `coupon ${B} does not exist or seq 11 is outside 1..total`]]);
    expect(c.rejected[0]!.record).toBe(outside.record);
    expect(c).toMatchObject({ held: [], unresolved: [], released: 0, inserted: 0 });
  });

  it('drops the record of a released reservation, and holds the same user\'s later one', () => {
    const released = write(A, 'alice', 3, T1, true);
    const again = write(A, 'alice', 3, T2, true);
    const c = classify([released, again], [insertedNow(again), releasedRecord(released)], []);
    expect(c.held.map((r) => [r.user_id, r.seq])).toEqual([['alice', 3]]);
    expect(c).toMatchObject({ rejected: [], unresolved: [], released: 1, inserted: 1 });
  });

  it('leaves unresolved a record the ledger neither wrote nor holds for its user: its seq looks taken', () => {
    const lost = write(A, 'alice', 4);
    const other = write(A, 'bob', 5);
    const c = classify([lost, other], [insertedNow(other)], []);
    expect(c.unresolved).toEqual([lost]);
    expect(c).toMatchObject({ rejected: [], released: 0, inserted: 1 });
  });

  it('does not leave unresolved a user the batch already refused', () => {
    const refusedEarlier = record(A, 'alice', 1n);
    const lost = write(A, 'alice', 4);
    const c = classify([lost], [], [{ record: refusedEarlier, reason: 'UNKNOWN_COUPON_OR_SEQ', error: 'earlier' }]);
    expect(c).toMatchObject({ held: [], rejected: [], unresolved: [], released: 0, inserted: 0 });
  });
});

describe('seqTaken', () => {
  const lost = write(A, 'alice', 4);

  it('refuses an unresolved record whose user the fresh re-read still finds no row for', () => {
    expect(summary(seqTaken([lost], []))).toEqual([['alice', 'SEQ_TAKEN', `seq 4 of coupon ${A} is held by another user`]]);
  });

  it('refuses nothing once the re-read finds the user\'s row (another issuer committed it meanwhile)', () => {
    expect(seqTaken([lost], [heldBefore(write(A, 'alice', 4))])).toEqual([]);
  });

  it('looks at coupon and user together', () => {
    expect(summary(seqTaken([lost], [heldBefore(write(B, 'alice', 4))]))).toEqual([['alice', 'SEQ_TAKEN', `seq 4 of coupon ${A} is held by another user`]]);
  });
});
