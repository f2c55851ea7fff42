// Reconciliation: do Redis, PostgreSQL and Kafka agree about a coupon? Every
// difference is named; a difference that records still in flight (unconsumed on the coupon's
// partition, journaled, or waiting in a dead-letter topic) can explain is reported as in flight, not
// as drift. Counts come from O(1) Redis calls and indexed SQL; per-user checks walk Redis with HSCAN
// and the ledger in pages, so a coupon of millions of users is never loaded at once.
import { Partitioners, type Admin } from 'kafkajs';
import type { Redis } from '../store/redis.ts';
import type { Db } from '../store/db.ts';
import { couponKeys, parseRedemptionValue } from '../store/keys.ts';
import { unreplayedDeadLetters } from '../store/dead-letters.ts';
import type { TopicNames } from '../events/topics.ts';

export type DriftKind =
  | 'ledger_count'        // coupons.issued_count differs from the rows in user_coupons
  | 'over_issued'         // more rows than total_quantity
  | 'issued_not_accepted' // a ledger row whose user Redis does not hold as a winner (gate armed)
  | 'seq_mismatch'        // Redis and the ledger give a user different seqs
  | 'accepted_not_issued' // more winners than rows than in-flight records can explain
  | 'issued_state_ahead'  // Redis marks more users issued than the ledger has rows
  | 'redeemed_mismatch';  // Redis and the ledger disagree on redeemed coupons beyond in-flight changes

export interface CouponReport {
  couponId: string;
  total: number;
  armed: boolean;
  redis: { winners: number; issued: number; redeemed: number; pending: number; outbox: number };
  postgres: { issuedCount: number; rows: number; redeemed: number };
  kafka: { issueInFlight: number; redemptionInFlight: number; issueDeadLetters: number; redemptionDeadLetters: number };
  drift: { kind: DriftKind; detail: string }[];
  inFlight: string[];
}

export interface ReconcileDeps {
  db: Db;
  redis: Redis;
  admin: Admin;
  topics: TopicNames;
  issuerGroup: string;
  ledgerGroup: string;
}

const partitionOf = Partitioners.DefaultPartitioner();

/** Records not yet committed by `groupId` on the partition that holds `key` (an upper bound for the key). */
async function inFlightFor(admin: Admin, topic: string, groupId: string, key: string): Promise<number> {
  const ends = await admin.fetchTopicOffsets(topic);
  const partition = partitionOf({ topic, partitionMetadata: ends.map((e) => ({ partitionId: e.partition, leader: 0, partitionErrorCode: 0, replicas: [], isr: [] })), message: { key, value: null } });
  const end = ends.find((e) => e.partition === partition);
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const done = Number(committed?.partitions.find((p) => p.partition === partition)?.offset ?? -1);
  const high = Number(end?.high ?? 0);
  const low = Number(end?.low ?? 0);
  return Math.max(0, high - Math.max(done, low));
}

export async function reconcileCoupon(d: ReconcileDeps, couponId: string): Promise<CouponReport | undefined> {
  const coupon = await d.db('coupons').where({ id: couponId }).first<{ total_quantity: number; issued_count: number } | undefined>('total_quantity', 'issued_count');
  if (!coupon) return undefined;
  const k = couponKeys(couponId);
  const [armed, winners, issued, pending, outbox] = await Promise.all([
    d.redis.exists(k.meta), d.redis.hlen(k.winners), d.redis.hlen(k.issued), d.redis.zcard(k.pending), d.redis.zcard(k.outbox),
  ]);
  const [counts] = await d.db('user_coupons').where({ coupon_id: couponId })
    .select<{ rows: number; redeemed: number }[]>(d.db.raw('count(*)::int AS rows'), d.db.raw('count(order_id)::int AS redeemed'));
  const rows = counts?.rows ?? 0;
  const redeemed = counts?.redeemed ?? 0;
  const [issueInFlight, redemptionInFlight, issueDeadLetters, redemptionDeadLetters] = await Promise.all([
    inFlightFor(d.admin, d.topics.issue, d.issuerGroup, couponId),
    inFlightFor(d.admin, d.topics.redemption, d.ledgerGroup, couponId),
    unreplayedDeadLetters(d.db, d.topics.issue, couponId),
    unreplayedDeadLetters(d.db, d.topics.redemption, couponId),
  ]);

  const drift: CouponReport['drift'] = [];
  const inFlight: string[] = [];
  let redisRedeemed = 0;
  if (coupon.issued_count !== rows) drift.push({ kind: 'ledger_count', detail: `coupons.issued_count is ${coupon.issued_count}, user_coupons holds ${rows} rows` });
  if (rows > coupon.total_quantity) drift.push({ kind: 'over_issued', detail: `${rows} rows for a total of ${coupon.total_quantity}` });

  if (armed) {
    // Per user: every ledger row must be a winner with the same seq (paged through the ledger).
    let missing = 0; let mismatched = 0; const examples: string[] = [];
    for (let after = ''; ;) {
      const page = await d.db('user_coupons').where({ coupon_id: couponId }).andWhere('user_id', '>', after).orderBy('user_id').limit(5_000).select<{ user_id: string; seq: number }[]>('user_id', 'seq');
      if (page.length === 0) break;
      const held = await d.redis.hmget(k.winners, ...page.map((r) => r.user_id));
      page.forEach((r, i) => {
        if (held[i] === null) { missing++; if (examples.length < 5) examples.push(r.user_id); } else if (Number(held[i]) !== r.seq) mismatched++;
      });
      after = page.at(-1)!.user_id;
    }
    if (missing > 0) drift.push({ kind: 'issued_not_accepted', detail: `${missing} ledger rows whose user Redis does not hold as a winner (e.g. ${examples.join(', ')})` });
    if (mismatched > 0) drift.push({ kind: 'seq_mismatch', detail: `${mismatched} users with a different seq in Redis and the ledger` });
    // Winners not yet in the ledger: pending publishes, records on the topic, or dead letters.
    const notIssued = winners - (rows - missing);
    const explained = pending + issueInFlight + issueDeadLetters;
    if (notIssued > explained) drift.push({ kind: 'accepted_not_issued', detail: `${notIssued} winners have no ledger row; at most ${explained} are in flight (pending ${pending}, unconsumed ${issueInFlight}, dead letters ${issueDeadLetters})` });
    else if (notIssued > 0) inFlight.push(`${notIssued} winners not yet in the ledger (in flight)`);
    if (issued > rows) drift.push({ kind: 'issued_state_ahead', detail: `Redis marks ${issued} users issued, the ledger has ${rows} rows` });
    else if (issued < rows) inFlight.push(`${rows - issued} ledger rows not yet marked issued in Redis`);

    // Redemptions: Redis values R vs ledger rows with an order, beyond journaled or unconsumed changes.
    for (let cursor = '0'; ;) {
      const [next, fields] = await d.redis.hscan(k.redeem, cursor, 'COUNT', 1_000);
      for (let i = 1; i < fields.length; i += 2) if (parseRedemptionValue(fields[i])?.state === 'R') redisRedeemed++;
      cursor = next;
      if (cursor === '0') break;
    }
    const loaded = (await d.redis.exists(k.redeemLoaded)) === 1;
    const gap = Math.abs(redisRedeemed - redeemed);
    if (loaded && gap > outbox + redemptionInFlight + redemptionDeadLetters) {
      drift.push({ kind: 'redeemed_mismatch', detail: `Redis holds ${redisRedeemed} redeemed, the ledger ${redeemed}; at most ${outbox + redemptionInFlight + redemptionDeadLetters} changes are in flight` });
    } else if (gap > 0) inFlight.push(`${gap} redemption changes not yet in the ledger (in flight)`);
  } else {
    inFlight.push('no gate state in Redis (lost or expired): it is rebuilt from the ledger on next use');
  }
  return {
    couponId, total: coupon.total_quantity, armed: armed === 1,
    redis: { winners, issued, redeemed: redisRedeemed, pending, outbox },
    postgres: { issuedCount: coupon.issued_count, rows, redeemed },
    kafka: { issueInFlight, redemptionInFlight, issueDeadLetters, redemptionDeadLetters },
    drift, inFlight,
  };
}

/** A fixed-width table of the reports, then every difference named. */
export function formatReports(reports: CouponReport[]): string {
  const head = ['coupon', 'total', 'redis won/issued/redeemed', 'pg count/rows/redeemed', 'kafka in flight issue/redemption', 'dead letters', 'verdict'];
  const rows = reports.map((r) => [
    r.couponId, String(r.total),
    r.armed ? `${r.redis.winners}/${r.redis.issued}/${r.redis.redeemed}` : '(not in Redis)',
    `${r.postgres.issuedCount}/${r.postgres.rows}/${r.postgres.redeemed}`,
    `${r.kafka.issueInFlight}/${r.kafka.redemptionInFlight}`,
    `${r.kafka.issueDeadLetters + r.kafka.redemptionDeadLetters}`,
    r.drift.length > 0 ? 'DRIFT' : r.inFlight.length > 0 ? 'in flight' : 'ok',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  const out = [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  for (const r of reports) {
    for (const d of r.drift) out.push(`DRIFT ${r.couponId} ${d.kind}: ${d.detail}`);
    for (const f of r.inFlight) out.push(`in flight ${r.couponId}: ${f}`);
  }
  return out.join('\n');
}

/** Coupons an operator most likely means: not complete yet, or completed within the last day. */
export async function recentCoupons(db: Db, limit = 1_000): Promise<string[]> {
  const rows = await db('coupons').whereNull('completed_at').orWhere('completed_at', '>', db.raw("now() - interval '1 day'"))
    .orderBy('created_at', 'desc').limit(limit).select<{ id: string }[]>('id');
  return rows.map((r) => r.id);
}
