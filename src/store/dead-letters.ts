// The record of what went to a dead-letter topic and whether it was replayed (table dead_letters).
// Consumers write it before producing to the dead-letter topic; the replay tool marks what it put
// back; rebuilds of Redis state refuse coupons that still have unreplayed dead letters.
import type { Db } from './db.ts';
import { canonicalCouponId } from '../domain/ids.ts';

export interface DeadLetterEntry { topic: string; partition: number; offset: string; couponId: string | null; reason: string }

export async function recordDeadLetters(db: Db, entries: DeadLetterEntry[]): Promise<void> {
  // In statements of 1,000 rows: a whole exhausted batch can hold tens of thousands of records, more
  // than one statement's 65,535 parameters. A key is whatever the record carried: PostgreSQL text
  // cannot hold NUL.
  for (let i = 0; i < entries.length; i += 1_000) {
    await db('dead_letters')
      .insert(entries.slice(i, i + 1_000).map((e) => ({ topic: e.topic, partition: e.partition, offset: e.offset, coupon_id: e.couponId === null ? null : canonicalCouponId(e.couponId) ?? e.couponId.replaceAll('\u0000', ''), reason: e.reason })))
      .onConflict(['topic', 'partition', 'offset']).merge({ reason: db.raw('excluded.reason'), replayed_at: null });
  }
}

/** Marks source records as replayed (they are back on their source topic). */
export async function markReplayed(db: Db, sources: { topic: string; partition: number; offset: string }[]): Promise<void> {
  for (let i = 0; i < sources.length; i += 1_000) {
    const part = sources.slice(i, i + 1_000);
    await db('dead_letters')
      .whereIn(['topic', 'partition', 'offset'], part.map((s) => [s.topic, s.partition, s.offset]))
      .whereNull('replayed_at')
      .update({ replayed_at: db.fn.now() });
  }
}

/** How many of the coupon's records on `topic` sit in its dead-letter topic unreplayed. */
export async function unreplayedDeadLetters(db: Db, topic: string, couponId: string): Promise<number> {
  const [row] = await db('dead_letters').where({ topic, coupon_id: couponId }).whereNull('replayed_at').count<{ count: string }[]>('* as count');
  return Number(row?.count ?? 0);
}
