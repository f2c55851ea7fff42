// ListCoupons against the real coupon-api and coupon-issuer, on a database of the file's own (so the
// listing holds exactly this file's coupons): every page of every filter compared with a model of
// the coupons created, each refusal with its code and reason, the roles, buf curl through
// reflection, and `npm run watch` without an id.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { fromBinary } from '@bufbuild/protobuf';
import { timestampDate, timestampFromMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { CouponStatus, type Coupon } from '../../gen/coupon/v1/coupon_pb.js';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';
import { SCAN_LIMIT } from '../../src/catalog/coupon-list.ts';
import { topicNames } from '../../src/events/topics.ts';
import { createDb } from '../../src/store/db.ts';
import { OwnDatabase } from '../../chaos/infra.ts';
import { authHeader, tokenFor } from '../support/auth.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { bufBin, run, startService, type ServiceProcess } from '../support/processes.ts';
import { config, dropEnvironment, kafka, uniqueEnv, until } from '../support/stack.ts';

const HOUR = 3_600_000;
const env = uniqueEnv('list');
const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
const own = new OwnDatabase(config.DATABASE_URL, `list_coupons_${randomUUID().slice(0, 8)}`);
const k = kafka();
let db: ReturnType<typeof createDb>;
let api: ServiceProcess;
let issuer: ServiceProcess | undefined;
let operator: CouponClient;
let storefront: CouponClient;

beforeAll(async () => {
  await own.create();
  db = createDb(own.url.toString(), 2);
  const envOwn = { ...env, DATABASE_URL: own.url.toString() };
  [api, issuer] = await Promise.all([startService('api', envOwn), startService('issuer', envOwn)]);
  operator = couponClient(api.address);
  storefront = couponClient(api.address, false, ['storefront']);
});
afterAll(async () => {
  operator?.close(); storefront?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  await db?.destroy();
  await own.drop();
  await dropEnvironment(k, topics);
});

// ---------------------------------------------------------------------------------------------
// The model: what was created, with the window and the counts the test gave each coupon.

type Status = 'SCHEDULED' | 'OPEN' | 'SOLD_OUT' | 'CLOSED' | 'COMPLETE' | 'PAUSED' | 'EXPIRED';
interface ModelCoupon {
  id: string; name: string; total: number; accepted: number; issued: number;
  opensAtMs: number; closesAtMs: number | null; validUntilMs: number | null;
  /** created_at as the ledger keeps it (UTC, microseconds), read back from the database. */
  createdUs: string;
  /** PauseCoupon answered OK for it. */
  paused?: boolean;
}
const model: ModelCoupon[] = [];

/** coupon.proto's order: the first status that applies. Windows here are hours from now, so `now` is any moment of the test. */
function statusOf(c: ModelCoupon, now = Date.now()): Status {
  if (now < c.opensAtMs) return 'SCHEDULED';
  if (c.validUntilMs !== null && now >= c.validUntilMs) return 'EXPIRED';
  if (c.issued >= c.total) return 'COMPLETE';
  if (c.accepted >= c.total) return 'SOLD_OUT';
  if (c.closesAtMs !== null && now >= c.closesAtMs) return 'CLOSED';
  if (c.paused) return 'PAUSED';
  return 'OPEN';
}

/** Newest created first; the same microsecond: higher id first. */
const newestFirst = (a: ModelCoupon, b: ModelCoupon) => (a.createdUs !== b.createdUs ? (a.createdUs < b.createdUs ? 1 : -1) : a.id < b.id ? 1 : -1);

interface Filter { status?: Status; sinceUs?: string; beforeUs?: string }
const expected = (f: Filter, among = model) => among
  .filter((c) => (!f.status || statusOf(c) === f.status) && (!f.sinceUs || c.createdUs >= f.sinceUs) && (!f.beforeUs || c.createdUs < f.beforeUs))
  .sort(newestFirst);

/** A microsecond time of the ledger as a Timestamp. */
function usToTimestamp(us: string): Timestamp {
  const ms = Date.parse(us.slice(0, 23) + 'Z');
  const ts = timestampFromMs(ms);
  ts.nanos += Number(us.slice(23, 26)) * 1_000;
  return ts;
}

const createdUs = async (id: string) => (await db('coupons').where({ id }).first<{ us: string }>(db.raw(`to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS us`))).us;

async function create(name: string, total: number, window: { opensInMs?: number; closesInMs?: number; validForMs?: number }) {
  const c = await createCoupon(operator, total, { ...window, name });
  const m: ModelCoupon = {
    id: c.id, name, total, accepted: 0, issued: 0,
    opensAtMs: timestampDate(c.opensAt!).getTime(), closesAtMs: c.closesAt ? timestampDate(c.closesAt).getTime() : null,
    validUntilMs: c.validUntil ? timestampDate(c.validUntil).getTime() : null,
    createdUs: await createdUs(c.id),
  };
  model.push(m);
  return m;
}

async function sell(m: ModelCoupon, users: number) {
  for (let i = 0; i < users; i++) await operator.issueCoupon({ couponId: m.id, userId: `buyer-${i}` });
  m.accepted += users;
}

const pbStatus = (s: Status | undefined) => (s ? CouponStatus[s] : CouponStatus.UNSPECIFIED);
const request = (f: Filter) => ({
  status: pbStatus(f.status),
  createdSince: f.sinceUs ? usToTimestamp(f.sinceUs) : undefined,
  createdBefore: f.beforeUs ? usToTimestamp(f.beforeUs) : undefined,
});

/** Every page of one listing; `between` runs after each page (to change the ledger meanwhile). */
async function walk(client: CouponClient, f: Filter, pageSize: number, between?: () => Promise<void>) {
  const pages: Coupon[][] = [];
  let pageToken = '';
  do {
    const page = await client.listCoupons({ ...request(f), pageSize, pageToken });
    pages.push(page.coupons);
    pageToken = page.nextPageToken;
    if (pageToken && between) await between();
    expect(pages.length, 'a listing that never ends').toBeLessThan(10_000);
  } while (pageToken);
  return pages;
}

/** What the caller sees of a coupon, against the model and against the ledger row. */
async function expectCoupon(got: Coupon, want: ModelCoupon) {
  expect({ id: got.id, name: got.name, status: CouponStatus[got.status], total: got.totalQuantity, accepted: got.acceptedCount, issued: got.issuedCount, remaining: got.remaining })
    .toEqual({ id: want.id, name: want.name, status: statusOf(want), total: BigInt(want.total), accepted: BigInt(want.accepted), issued: BigInt(want.issued), remaining: BigInt(want.total - want.accepted) });
  const row = await db('coupons').where({ id: want.id }).first<{ issued_count: number; total_quantity: number; created_at: Date }>();
  expect({ issued: row.issued_count, total: row.total_quantity, createdMs: row.created_at.getTime() })
    .toEqual({ issued: want.issued, total: want.total, createdMs: timestampDate(got.createdAt!).getTime() });
}

/** Pages of `pageSize` (0 means 50) that are exactly the model's list cut in order, the last token empty. */
async function expectPages(pages: Coupon[][], want: ModelCoupon[], pageSize: number) {
  const size = pageSize || 50;
  const cut = want.length === 0 ? [[]] : Array.from({ length: Math.ceil(want.length / size) }, (_, i) => want.slice(i * size, (i + 1) * size));
  expect(pages.map((p) => p.map((c) => c.id))).toEqual(cut.map((p) => p.map((c) => c.id)));
  for (const [i, got] of pages.flat().entries()) await expectCoupon(got, want[i]!);
}

const STATUSES: (Status | undefined)[] = [undefined, 'SCHEDULED', 'OPEN', 'SOLD_OUT', 'CLOSED', 'COMPLETE', 'EXPIRED', 'PAUSED'];
const refusal = async (p: Promise<unknown>) => { const e = await callError(p); return { code: e.code, reason: e.reason, field: e.field }; };

// ---------------------------------------------------------------------------------------------

describe('ListCoupons', () => {
  beforeAll(async () => {
    // Windows hours away from now, created in an order that mixes the statuses.
    await create('open, no end', 5, {});
    await create('scheduled', 3, { opensInMs: 2 * HOUR });
    await create('closed', 4, { opensInMs: -3 * HOUR, closesInMs: -HOUR });
    const complete = await create('complete', 1, {});
    await create('expired after closing', 2, { opensInMs: -4 * HOUR, closesInMs: -3 * HOUR, validForMs: -2 * HOUR });
    const partly = await create('open, partly taken', 3, { closesInMs: HOUR, validForMs: 2 * HOUR });
    await create('scheduled later', 1, { opensInMs: 5 * HOUR, closesInMs: 6 * HOUR });
    const soldOut = await create('sold out', 2, { closesInMs: 2 * HOUR });
    await create('expired, no end', 1, { opensInMs: -2 * HOUR, validForMs: -HOUR });
    await create('closed too', 1, { opensInMs: -2 * HOUR, closesInMs: -HOUR, validForMs: HOUR });
    await create('open again', 10, { closesInMs: 3 * HOUR });
    const paused = await create('paused', 4, { closesInMs: 3 * HOUR });
    await operator.pauseCoupon({ couponId: paused.id });
    paused.paused = true;

    // COMPLETE: the issuer writes the one unit to the ledger.
    await sell(complete, 1);
    await until('the issuer to complete the coupon', async () => (await db('coupons').where({ id: complete.id }).first<{ issued_count: number }>()).issued_count === 1);
    complete.issued = 1;
    // SOLD_OUT: every unit passed the gate, and with the issuer stopped none reaches the ledger.
    await issuer!.stop();
    issuer = undefined;
    await sell(soldOut, 2);
    await sell(partly, 1);
    expect(new Set(model.map((c) => statusOf(c)))).toEqual(new Set(['SCHEDULED', 'OPEN', 'SOLD_OUT', 'CLOSED', 'COMPLETE', 'EXPIRED', 'PAUSED']));
  });

  it('walks every filter at every page size: exactly the model\'s coupons, newest first, with live counts and status', async () => {
    for (const status of STATUSES) {
      for (const pageSize of [1, 2, 3, 0]) {
        const pages = await walk(operator, { status }, pageSize);
        await expectPages(pages, expected({ status }), pageSize);
      }
    }
    // The statuses split the coupons between them.
    expect((await walk(operator, {}, 0)).flat()).toHaveLength(model.length);
  });

  it('filters on the created time: since is inclusive, before exclusive, to the microsecond, with and without a status', async () => {
    const order = [...model].sort(newestFirst).reverse();
    const since = order[2]!.createdUs;
    const before = order[8]!.createdUs;
    for (const f of [{ sinceUs: since }, { beforeUs: before }, { sinceUs: since, beforeUs: before }, { sinceUs: since, beforeUs: before, status: 'OPEN' as const }]) {
      const want = expected(f);
      expect(want.length).toBeGreaterThan(0);
      for (const pageSize of [1, 4]) await expectPages(await walk(operator, f, pageSize), want, pageSize);
    }
    // The boundaries: the coupon created at `since` is in, the one at `before` is out.
    const ids = (await walk(operator, { sinceUs: since, beforeUs: before }, 0)).flat().map((c) => c.id);
    expect(ids).toContain(order[2]!.id);
    expect(ids).not.toContain(order[8]!.id);
    expect(ids).toHaveLength(6);
    // One microsecond later, `since` leaves the first coupon out.
    const nextUs = usToTimestamp(since);
    nextUs.nanos += 1;
    const later = await operator.listCoupons({ createdSince: nextUs, createdBefore: usToTimestamp(before) });
    expect(later.coupons.map((c) => c.id)).toEqual(ids.filter((id) => id !== order[2]!.id));
  });

  it('keeps a walk whole while coupons are created between its pages: no duplicate, no omission, the new ones in a later walk', async () => {
    for (const f of [{}, { status: 'OPEN' as const }]) {
      const before = expected(f);
      const fresh: ModelCoupon[] = [];
      const pages = await walk(operator, f, 2, async () => { fresh.push(await create(`created between pages ${fresh.length}`, 2, {})); });
      expect(fresh.length).toBeGreaterThan(0);
      await expectPages(pages, before, 2);
      const again = (await walk(operator, f, 3)).flat().map((c) => c.id);
      expect(again).toEqual(expected(f).map((c) => c.id));
      expect(again.slice(0, fresh.length)).toEqual(fresh.map((c) => c.id).reverse());
    }
  });

  it('orders coupons created in the same microsecond by id, and pages through them without skipping', async () => {
    // What one transaction writing several coupons would leave: the same now() on every row.
    const at = '2026-03-01T10:00:00.123456Z';
    const rows = Array.from({ length: 5 }, (_, i) => ({
      id: randomUUID(), name: `same microsecond ${i}`, total_quantity: 3, opens_at: new Date(Date.now() - HOUR), closes_at: null, valid_until: null, created_at: at,
    }));
    await db('coupons').insert(rows);
    for (const r of rows) model.push({ id: r.id, name: r.name, total: 3, accepted: 0, issued: 0, opensAtMs: r.opens_at.getTime(), closesAtMs: null, validUntilMs: null, createdUs: at });
    const f = { sinceUs: at, beforeUs: '2026-03-01T10:00:00.123457Z' };
    for (const pageSize of [1, 2]) await expectPages(await walk(operator, f, pageSize), expected(f), pageSize);
    expect(expected(f).map((c) => c.id)).toEqual(rows.map((r) => r.id).sort().reverse());
  });

  it('ends a page early after reading SCAN_LIMIT rows, with a token to go on, when few rows match', { timeout: 60_000 }, async () => {
    // More closed coupons than one call reads, all newer than the one sold-out coupon.
    const closedAtMs = Date.now() - HOUR;
    const rows = Array.from({ length: SCAN_LIMIT + 10 }, (_, i) => ({
      id: randomUUID(), name: `bulk closed ${i}`, total_quantity: 2, opens_at: new Date(closedAtMs - HOUR), closes_at: new Date(closedAtMs), valid_until: null,
    }));
    await db.batchInsert('coupons', rows, 500);
    for (const r of rows) model.push({ id: r.id, name: r.name, total: 2, accepted: 0, issued: 0, opensAtMs: r.opens_at.getTime(), closesAtMs: closedAtMs, validUntilMs: null, createdUs: '' });
    const stored = await db('coupons').whereIn('id', rows.map((r) => r.id)).select<{ id: string; us: string }[]>('id', db.raw(`to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS us`));
    const usOf = new Map(stored.map((s) => [s.id, s.us]));
    for (const m of model) if (m.createdUs === '') m.createdUs = usOf.get(m.id)!;

    const pages = await walk(operator, { status: 'SOLD_OUT' }, 5);
    // The first page read SCAN_LIMIT closed coupons and found none; the next found the sold-out one.
    expect(pages[0]).toEqual([]);
    expect(pages.flat().map((c) => c.id)).toEqual(expected({ status: 'SOLD_OUT' }).map((c) => c.id));
    // Every coupon, a thousand at a time.
    const all = await walk(operator, {}, 1_000);
    expect(all.map((p) => p.length)).toEqual([1_000, 1_000, model.length - 2_000]);
    expect(all.flat().map((c) => c.id)).toEqual(expected({}).map((c) => c.id));
  });
});

describe('ListCoupons refusals', () => {
  const invalid = (field: string) => ({ code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD', field });
  const badToken = { code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_PAGE_TOKEN', field: '' };

  it('refuses a page size out of range, a long token, an unknown status, a time out of range and an inverted time range: INVALID_FIELD', async () => {
    const now = timestampFromMs(Date.now());
    const earlier = timestampFromMs(Date.now() - HOUR);
    const cases: [string, Parameters<CouponClient['listCoupons']>[0], ReturnType<typeof invalid>][] = [
      ['page_size -1', { pageSize: -1 }, invalid('page_size')],
      ['page_size 1001', { pageSize: 1_001 }, invalid('page_size')],
      ['a page_token over 1024 characters', { pageToken: 'x'.repeat(1_025) }, invalid('page_token')],
      ['status 8', { status: 8 as CouponStatus }, invalid('status')],
      ['status -1', { status: -1 as CouponStatus }, invalid('status')],
      ['created_since before 1970', { createdSince: { seconds: -1n, nanos: 0 } }, invalid('created_since')],
      ['created_before after 9999', { createdBefore: { seconds: 253402300800n, nanos: 0 } }, invalid('created_before')],
      ['created_before before created_since', { createdSince: now, createdBefore: earlier }, invalid('created_before')],
      ['created_before equal to created_since', { createdSince: now, createdBefore: now }, invalid('created_before')],
    ];
    for (const [what, req, want] of cases) expect(await refusal(operator.listCoupons(req)), what).toEqual(want);
    // Page size at the limits is fine, and so is the last nanosecond of 9999 (it rounds to its last microsecond).
    expect((await operator.listCoupons({ pageSize: 1_000 })).coupons.length).toBeGreaterThan(0);
    expect((await operator.listCoupons({ createdSince: { seconds: 253402300799n, nanos: 999_999_999 } })).coupons).toEqual([]);
    expect((await operator.listCoupons({ pageSize: 1 })).coupons).toHaveLength(1);
  });

  it('refuses a token it did not issue, or issued for other filters or for ListUserCoupons: INVALID_PAGE_TOKEN', async () => {
    const open = await operator.listCoupons({ status: CouponStatus.OPEN, pageSize: 1 });
    expect(open.nextPageToken).not.toBe('');
    // The same token with the same filters goes on.
    expect((await operator.listCoupons({ status: CouponStatus.OPEN, pageSize: 1, pageToken: open.nextPageToken })).coupons).toHaveLength(1);
    const since = timestampFromMs(Date.now() - 24 * HOUR);
    const ranged = await operator.listCoupons({ createdSince: since, pageSize: 1 });
    expect(ranged.nextPageToken).not.toBe('');
    const forged = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const decoded = JSON.parse(Buffer.from(open.nextPageToken, 'base64url').toString()) as { t: string; c: string; f: string };
    const cases: [string, Parameters<CouponClient['listCoupons']>[0]][] = [
      ['another status', { status: CouponStatus.SCHEDULED, pageToken: open.nextPageToken }],
      ['no status', { pageToken: open.nextPageToken }],
      ['a range added', { status: CouponStatus.OPEN, createdSince: since, pageToken: open.nextPageToken }],
      ['another range', { createdSince: timestampFromMs(Date.now() - 25 * HOUR), pageToken: ranged.nextPageToken }],
      ['the range dropped', { pageToken: ranged.nextPageToken }],
      ['not a token', { pageToken: 'forged' }],
      ['a ListUserCoupons token', { pageToken: forged({ t: decoded.t, c: decoded.c, u: 'someone' }) }],
      ['a bad time', { status: CouponStatus.OPEN, pageToken: forged({ ...decoded, t: '2026-02-30T00:00:00.000000Z' }) }],
      ['a bad id', { status: CouponStatus.OPEN, pageToken: forged({ ...decoded, c: 'x' }) }],
    ];
    for (const [what, req] of cases) expect(await refusal(operator.listCoupons(req)), what).toEqual(badToken);
    // And a ListCoupons token is no ListUserCoupons token.
    expect(await refusal(operator.listUserCoupons({ userId: 'someone', pageToken: forged({ t: decoded.t, c: decoded.c, f: decoded.f }) }))).toEqual(badToken);
  });

  it('refuses a status name the enum does not have in JSON: MALFORMED_REQUEST naming the field', async () => {
    const res = await fetch(`${api.url}/coupon.v1.CouponService/ListCoupons`, {
      method: 'POST', headers: { 'content-type': 'application/json', ...(await authHeader('operator')) }, body: JSON.stringify({ status: 'COUPON_STATUS_BOGUS' }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; details: { type: string; value: string }[] };
    const detail = fromBinary(ErrorDetailSchema, Buffer.from(body.details.find((d) => d.type === 'coupon.v1.ErrorDetail')!.value, 'base64'));
    expect({ code: body.code, reason: detail.reason, field: detail.field }).toEqual({ code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field: 'status' });
  });
});

describe('ListCoupons roles', () => {
  it('lets a storefront list the open coupons only, refuses it every other listing, and refuses the payment service', async () => {
    const denied = { code: grpc.status.PERMISSION_DENIED, reason: 'ROLE_NOT_ALLOWED' };
    // The open coupons, page by page, as the operator sees them.
    const asOperator = (await walk(operator, { status: 'OPEN' }, 2)).flat().map((c) => c.id);
    expect((await walk(storefront, { status: 'OPEN' }, 2)).flat().map((c) => c.id)).toEqual(asOperator);
    expect(asOperator).toEqual(expected({ status: 'OPEN' }).map((c) => c.id));
    // Anything else: refused, naming the status field.
    for (const status of STATUSES.filter((s) => s !== 'OPEN')) {
      expect(await refusal(storefront.listCoupons({ status: pbStatus(status) })), String(status)).toEqual({ ...denied, field: 'status' });
    }
    expect(api.logs.some((l) => l.msg === 'call refused: role not allowed' && l.sub === 'test-storefront' && l.procedure === 'ListCoupons' && l.field === 'status')).toBe(true);
    // A caller that is also an operator is not limited.
    const both = couponClient(api.address, false, ['storefront', 'operator']);
    const payment = couponClient(api.address, false, ['payment']);
    try {
      expect((await both.listCoupons({ status: CouponStatus.SCHEDULED })).coupons.map((c) => c.id)).toEqual(expected({ status: 'SCHEDULED' }).map((c) => c.id));
      expect(await refusal(payment.listCoupons({ status: CouponStatus.OPEN }))).toEqual({ ...denied, field: '' });
    } finally { both.close(); payment.close(); }
  });
});

describe('ListCoupons through buf curl and reflection', () => {
  it('lists the open coupons as JSON, as an operator would from a shell', async () => {
    const { code, stdout, stderr } = await run(bufBin, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-H', `Authorization: Bearer ${await tokenFor('operator')}`,
      '-d', JSON.stringify({ status: 'COUPON_STATUS_OPEN', pageSize: 100 }), `${api.url}/coupon.v1.CouponService/ListCoupons`]);
    expect(code, stderr).toBe(0);
    const printed = JSON.parse(stdout) as { coupons: { id: string; status: string; name: string }[]; nextPageToken?: string };
    expect(printed.coupons.map((c) => c.id)).toEqual(expected({ status: 'OPEN' }).map((c) => c.id));
    expect(new Set(printed.coupons.map((c) => c.status))).toEqual(new Set(['COUPON_STATUS_OPEN']));
    expect(printed.nextPageToken ?? '').toBe('');
  });
});

describe('npm run watch without an id', () => {
  it('prints the open coupons, numbered, and exits 0 with a hint when stdin is not a terminal', async () => {
    const { code, stdout, stderr } = await run(process.execPath, ['src/bin/watch.ts'], { ...env, API_PORT: new URL(api.url).port });
    expect(code, stderr).toBe(0);
    const open = expected({ status: 'OPEN' });
    const listed = stdout.split('\n').filter((l) => /^\s+\d+ {2}[0-9a-f-]{36} /.test(l)).map((l) => /^\s+(\d+) {2}([0-9a-f-]{36}) {2}"([^"]*)"/.exec(l)!.slice(1));
    expect(listed).toEqual(open.map((c, i) => [String(i + 1), c.id, c.name]));
    expect(stdout).toContain('open coupons, newest first:');
    expect(stdout).toContain('npm run watch -- <coupon id> watches one');
    // What one line says of a coupon: its counts and when it closes.
    const partly = open.find((c) => c.name === 'open, partly taken')!;
    expect(stdout).toContain(`"open, partly taken"  accepted 1 / 3  closes ${new Date(partly.closesAtMs!).toISOString().slice(0, 19).replace('T', ' ')}Z`);
  });

  it('still refuses an argument that is not a coupon id', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/watch.ts', 'not-a-uuid'], { ...env, API_PORT: new URL(api.url).port });
    expect(code).toBe(2);
    expect(stderr).toContain('not a coupon id (a UUID): not-a-uuid');
  });
});
