// ListCoupons: the ledger's coupons newest created first (ties: higher id first), a page at a time,
// each with the gate's live count and its status (docs/api.md#listcoupons). Keyset pagination
// with the page tokens of every list RPC (page-token.ts), bound to the filters.
import type { Db } from '../store/db.ts';
import type { Redis } from '../store/redis.ts';
import type { CouponRow } from '../store/coupons.ts';
import { afterKeyset, decodePageToken, encodePageToken, formatUs, timeUs, type Keyset } from './page-token.ts';
import { acceptedCount, couponView, statusCandidates, type CouponStatusName, type CouponView } from './status.ts';

export interface CouponFilter {
  /** Only this status; undefined lists every status. */
  status?: CouponStatusName | undefined;
  /** Only coupons created at or after this time (microseconds since the epoch). */
  createdSinceUs?: bigint | undefined;
  /** Only coupons created before this time (microseconds since the epoch). */
  createdBeforeUs?: bigint | undefined;
}

export interface CouponPage { items: CouponView[]; nextToken: string }

export interface ListDeps { db: Db; redis: Redis; nowMs: number }

/**
 * Rows one call reads at most. A status the ledger cannot decide alone (SOLD_OUT, CLOSED, PAUSED, OPEN)
 * reads candidates and keeps those the gate's count confirms; when few of them match (SOLD_OUT
 * among many closed coupons), the page ends after this many rows with what it found, possibly
 * nothing, and a token to go on.
 */
export const SCAN_LIMIT = 2_000;

/** The filters as the token keeps them: a token is valid only for the filters it was issued for. */
const scopeOf = (f: CouponFilter) => ({ f: [f.status ?? '', f.createdSinceUs ?? '', f.createdBeforeUs ?? ''].join('/') });

export async function listCoupons(d: ListDeps, filter: CouponFilter, pageSize: number, pageToken: string): Promise<CouponPage> {
  const scope = scopeOf(filter);
  let after: Keyset | undefined = pageToken ? decodePageToken(pageToken, scope, 'for these filters (status, created_since and created_before must not change between pages)') : undefined;
  const now = new Date(d.nowMs);
  const items: CouponView[] = [];
  let scanned = 0;
  // A page and one more row first (enough when every row matches), twice as many on each further read.
  for (let batch = pageSize + 1; ; batch *= 2) {
    const limit = Math.min(batch, SCAN_LIMIT - scanned);
    const query = d.db<CouponRow>('coupons')
      .select('*', d.db.raw(`${timeUs('created_at')} AS created_at_us`))
      .orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }])
      .limit(limit);
    if (filter.status) query.andWhereRaw(statusCandidates(filter.status), { now });
    if (filter.createdSinceUs !== undefined) query.andWhereRaw('created_at >= ?::timestamptz', [formatUs(filter.createdSinceUs)]);
    if (filter.createdBeforeUs !== undefined) query.andWhereRaw('created_at < ?::timestamptz', [formatUs(filter.createdBeforeUs)]);
    if (after) query.andWhereRaw(afterKeyset('created_at', 'id'), [after.at, after.id]);
    const rows = (await query) as (CouponRow & { created_at_us: string })[];
    const views = await Promise.all(rows.map(async (row) => couponView(row, await acceptedCount(d.redis, row), d.nowMs)));
    for (const [i, view] of views.entries()) {
      const row = rows[i]!;
      if (!filter.status || view.status === filter.status) {
        // One more match than the page holds: the page is full, and there is a next one.
        if (items.length === pageSize) return { items, nextToken: encodePageToken(after!, scope) };
        items.push(view);
      }
      after = { at: row.created_at_us, id: row.id };
      scanned++;
    }
    if (rows.length < limit) return { items, nextToken: '' };
    if (scanned >= SCAN_LIMIT) return { items, nextToken: encodePageToken(after!, scope) };
  }
}
