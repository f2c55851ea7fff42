// Page tokens of the list RPCs (ListUserCoupons, ListCoupons): keyset pagination, newest first, over
// a timestamp column and a uuid that breaks ties. The token holds the last row's time to the
// microsecond, as PostgreSQL keeps it (rows written in one transaction share now(), so anything
// coarser skips rows), its uuid, and the listing it belongs to (the user, or the filters), so a token
// is refused by any other listing. It is opaque to callers (docs/api.md#page-tokens).
import { DomainError } from '../domain/errors.ts';
import { isUuid } from '../domain/ids.ts';

/** Where the previous page ended: a row's time (UTC, to the microsecond) and its uuid. */
export interface Keyset { at: string; id: string }

/** What a token is bound to: short keys ("u" the user, "f" the filters) and their exact values. */
export type Scope = Record<string, string>;

// Years 1970 to 9999, the range the API takes timestamps in (PostgreSQL refuses year 0, which
// JavaScript's Date reads).
const TOKEN_TIME = /^(19[7-9]\d|[2-9]\d{3})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** SQL for `column` in the form the token keeps (select it next to the row). */
export const timeUs = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/** SQL: the row comes after the keyset in newest-first order ((time, id) descending). */
export const afterKeyset = (timeColumn: string, idColumn: string) => `(${timeColumn}, ${idColumn}) < (?::timestamptz, ?::uuid)`;

export function encodePageToken(last: Keyset, scope: Scope): string {
  return Buffer.from(JSON.stringify({ t: last.at, c: last.id, ...scope })).toString('base64url');
}

/** The keyset of a token this server issued for `scope`; INVALID_PAGE_TOKEN, saying `why`, otherwise. */
export function decodePageToken(pageToken: string, scope: Scope, why: string): Keyset {
  try {
    const parsed = JSON.parse(Buffer.from(pageToken, 'base64url').toString('utf8')) as Record<string, unknown>;
    const t = parsed.t;
    if (typeof t !== 'string' || !TOKEN_TIME.test(t) || typeof parsed.c !== 'string' || !isUuid(parsed.c)) throw new Error('bad token');
    if (Object.entries(scope).some(([k, v]) => parsed[k] !== v)) throw new Error('bad token');
    // A real calendar time (no month 13, no February 30), so PostgreSQL never sees an invalid one.
    const ms = Date.parse(t);
    if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 19) !== t.slice(0, 19)) throw new Error('bad token');
    return { at: t, id: parsed.c };
  } catch {
    throw new DomainError('INVALID_PAGE_TOKEN', `page_token was not issued by this server ${why}`);
  }
}

/** A time in microseconds since the epoch, in the token's form (UTC, six decimals). */
export function formatUs(us: bigint): string {
  const ms = us / 1000n;
  const micros = Number(us % 1000n);
  return `${new Date(Number(ms)).toISOString().slice(0, 23)}${String(micros).padStart(3, '0')}Z`;
}
