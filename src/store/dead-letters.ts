// The record of what went to a dead-letter topic and how it was resolved (table dead_letters).
// Consumers write it before producing to the dead-letter topic; the replay tool marks what it put
// back; an operator discards one that can never be replayed (`npm run dlt:discard`); rebuilds of
// Redis state refuse coupons while a dead letter may still own a seq or a change (blockingDeadLetters).
import type { Db } from './db.ts';
import { canonicalCouponId } from '../domain/ids.ts';

export interface DeadLetterEntry {
  topic: string; partition: number; offset: string; couponId: string | null; reason: string;
  /** What an issue record asks for (user, seq), when it decoded; kept so a rebuild can judge it. */
  userId?: string | null; seq?: bigint | null;
}

/** A dead letter's id, as operators name it: its source record's "<topic>/<partition>/<offset>" (the x-source-* headers). */
export const deadLetterId = (source: { topic: string; partition: number; offset: string }) => `${source.topic}/${source.partition}/${source.offset}`;

export function parseDeadLetterId(id: string): { topic: string; partition: number; offset: string } | undefined {
  // Topic names hold no '/' (Kafka allows letters, digits, '.', '_' and '-').
  const m = /^([A-Za-z0-9._-]+)\/(\d+)\/(\d+)$/.exec(id.trim());
  return m ? { topic: m[1]!, partition: Number(m[2]), offset: m[3]! } : undefined;
}

export async function recordDeadLetters(db: Db, entries: DeadLetterEntry[]): Promise<void> {
  // In statements of 1,000 rows: a whole exhausted batch can hold tens of thousands of records, more
  // than one statement's 65,535 parameters. A key is whatever the record carried: PostgreSQL text
  // cannot hold NUL.
  for (let i = 0; i < entries.length; i += 1_000) {
    await db('dead_letters')
      .insert(entries.slice(i, i + 1_000).map((e) => ({
        topic: e.topic, partition: e.partition, offset: e.offset, reason: e.reason,
        coupon_id: e.couponId === null ? null : canonicalCouponId(e.couponId) ?? e.couponId.replaceAll('\u0000', ''),
        user_id: e.userId?.replaceAll('\u0000', '') ?? null,
        seq: e.seq === undefined || e.seq === null ? null : String(e.seq),
      })))
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

/** How many of the coupon's records on `topic` sit in its dead-letter topic, neither replayed nor discarded. */
export async function unreplayedDeadLetters(db: Db, topic: string, couponId: string): Promise<number> {
  const [row] = await db('dead_letters').where({ topic, coupon_id: couponId }).whereNull('replayed_at').whereNull('discarded_at').count<{ count: string }[]>('* as count');
  return Number(row?.count ?? 0);
}

/**
 * How many of the coupon's unresolved dead letters on `topic` a rebuild of its Redis state must
 * wait for (DESIGN.md, "Redis loses everything": they may still own a seq or a change). One that
 * can never own its seq cannot block: replaying it can only dead-letter it again (under a new
 * offset), so waiting for it would block the coupon for ever. That is an issue record whose seq
 * is outside 1..total, or whose seq or whose user the ledger already holds (the unique
 * (coupon, seq) and (coupon, user) keys refuse it). A dead letter whose seq is unknown (it did not
 * decode, or it is a redemption change) blocks until it is replayed or discarded.
 * `couponId` is canonical (a UUID): only rebuilds of existing coupons ask.
 */
export async function blockingDeadLetters(db: Db, topic: string, couponId: string): Promise<number> {
  const { rows } = await db.raw<{ rows: { count: string }[] }>(`
    SELECT count(*) AS count FROM dead_letters d
    WHERE d.topic = ? AND d.coupon_id = ? AND d.replayed_at IS NULL AND d.discarded_at IS NULL
      AND NOT (d.seq IS NOT NULL AND (
        NOT EXISTS (SELECT 1 FROM coupons c WHERE c.id = ?::uuid AND d.seq BETWEEN 1 AND c.total_quantity)
        OR EXISTS (SELECT 1 FROM user_coupons u WHERE u.coupon_id = ?::uuid AND u.seq = d.seq)
        OR EXISTS (SELECT 1 FROM user_coupons u WHERE u.coupon_id = ?::uuid AND u.user_id = d.user_id)))`,
  [topic, couponId, couponId, couponId, couponId]);
  return Number(rows[0]?.count ?? 0);
}

export interface DeadLetterRow {
  topic: string; partition: number; offset: number; coupon_id: string | null; reason: string; user_id: string | null; seq: number | null;
  dead_lettered_at: Date; replayed_at: Date | null; discarded_at: Date | null; discarded_by: string | null; discard_reason: string | null;
}

export type DiscardOutcome =
  | { outcome: 'DISCARDED' | 'ALREADY_DISCARDED' | 'ALREADY_REPLAYED'; row: DeadLetterRow }
  | { outcome: 'NOT_FOUND' };

/**
 * An operator gives up a dead letter that can never be replayed: who, why and when are kept with
 * it, rebuilds stop waiting for it, and the replay tool skips it. Idempotent: a dead letter
 * already discarded keeps its first resolution; one already replayed is left as it is.
 */
export async function discardDeadLetter(db: Db, source: { topic: string; partition: number; offset: string }, by: string, reason: string): Promise<DiscardOutcome> {
  const where = { topic: source.topic, partition: source.partition, offset: source.offset };
  const [updated] = await db('dead_letters').where(where).whereNull('replayed_at').whereNull('discarded_at')
    .update({ discarded_at: db.fn.now(), discarded_by: by, discard_reason: reason }).returning<DeadLetterRow[]>('*');
  if (updated) return { outcome: 'DISCARDED', row: updated };
  const row = await db('dead_letters').where(where).first<DeadLetterRow | undefined>();
  if (!row) return { outcome: 'NOT_FOUND' };
  return { outcome: row.replayed_at ? 'ALREADY_REPLAYED' : 'ALREADY_DISCARDED', row };
}

/** Which of these source records were discarded (by deadLetterId): the replay tool leaves them on the dead-letter topic. */
export async function discardedAmong(db: Db, sources: { topic: string; partition: number; offset: string }[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (let i = 0; i < sources.length; i += 1_000) {
    const part = sources.slice(i, i + 1_000);
    const rows = await db('dead_letters').whereIn(['topic', 'partition', 'offset'], part.map((s) => [s.topic, s.partition, s.offset]))
      .whereNotNull('discarded_at').select<{ topic: string; partition: number; offset: string | number }[]>('topic', 'partition', 'offset');
    for (const r of rows) out.add(deadLetterId({ topic: r.topic, partition: r.partition, offset: String(r.offset) }));
  }
  return out;
}
