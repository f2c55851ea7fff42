// The short path for IssueCoupon over Connect JSON (src/server/fast-json.ts) answers exactly as
// connect-es does. Two real coupon-api processes on the same stack, one with the short path
// (the default) and one without (API_FAST_JSON=false), get the same requests over plain HTTP: well
// formed and malformed bodies, every spelling the JSON mapping allows, headers the short path leaves
// to connect-es, missing and wrong credentials, and every state of a coupon. Each pair of answers
// must be equal (status, content type, body), and each answer must be what the API promises
// (docs/api.md). The short path's counter shows which requests it answered itself.
import { randomUUID } from 'node:crypto';
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { fromBinary, toJson } from '@bufbuild/protobuf';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';
import { scrape, sumOf } from '../../src/metrics/text-format.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { tokenFor } from '../support/auth.ts';
import { createCoupon, decided } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { until } from '../support/stack.ts';

const svc = fileServices('fast-json', { API_WORKERS: '1' });
let slow: ServiceProcess;
beforeAll(async () => { slow = await startService('api', { ...svc.env, API_FAST_JSON: 'false' }); }, 120_000);
afterAll(async () => { await slow?.stop(); });

interface Answer { status: number; type: string | null; body: unknown }

/** One request as plain HTTP; the coupon's id in the answer is replaced by <id>, so two coupons' answers compare. */
async function post(url: string, body: string | Uint8Array, headers: Record<string, string>, couponId?: string): Promise<Answer> {
  const res = await fetch(`${url}/coupon.v1.CouponService/IssueCoupon`, { method: 'POST', headers, body });
  let text = await res.text();
  if (couponId) text = text.replaceAll(couponId, '<id>').replaceAll(couponId.toUpperCase(), '<ID>');
  let parsed: unknown = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON: compared as text */ }
  // An error detail's bytes name the coupon too: compared decoded.
  for (const d of (parsed as { details?: { type: string; value: string }[] }).details ?? []) {
    if (d.type === ErrorDetailSchema.typeName && couponId) d.value = JSON.stringify(toJson(ErrorDetailSchema, fromBinary(ErrorDetailSchema, Buffer.from(d.value, 'base64')))).replaceAll(couponId, '<id>');
  }
  return { status: res.status, type: res.headers.get('content-type'), body: parsed };
}

/** The coupon.v1.ErrorDetail reason of a Connect JSON error body. */
function reasonOf(details: { type: string; value: string }[] | undefined): string | undefined {
  const detail = details?.find((d) => d.type === ErrorDetailSchema.typeName);
  return detail && (JSON.parse(detail.value) as { reason?: string }).reason;
}

const fastCount = async (api: ServiceProcess) => sumOf(await scrape(api.metricsUrl), 'coupon_rpc_fast_json_total', { grpc_method: 'IssueCoupon' });

type Case = { name: string; body: (id: string) => string | Uint8Array; headers?: (auth: string) => Record<string, string>; fast: boolean; expect: { status: number; reason?: string; seq?: string; state?: string } };

const json = (auth: string) => ({ 'content-type': 'application/json', authorization: auth });
const issue = (couponId: string, userId: string) => JSON.stringify({ couponId, userId });

describe('IssueCoupon over Connect JSON', () => {
  it('answers the same with and without the short path, for every request shape and coupon state', { timeout: 180_000 }, async () => {
    const storefront = `Bearer ${await tokenFor('storefront')}`;
    const payment = `Bearer ${await tokenFor('payment')}`;
    // One set of coupons per server, in the same states.
    const sets = await Promise.all([0, 1].map(async () => {
      const open = await createCoupon(svc.client, 5, { validForMs: 3_600_000 });
      const soldOut = await createCoupon(svc.client, 1);
      await decided(() => svc.client.issueCoupon({ couponId: soldOut.id, userId: 'winner' }));
      const paused = await createCoupon(svc.client, 5);
      await svc.client.pauseCoupon({ couponId: paused.id });
      const later = await createCoupon(svc.client, 5, { opensInMs: 3_600_000 });
      return { open: open.id, soldOut: soldOut.id, paused: paused.id, later: later.id };
    }));
    const unknown = randomUUID();
    const bad = (reason: string, status = 400) => ({ status, reason });

    const cases: (Case & { coupon: keyof (typeof sets)[number] })[] = [
      { name: 'a new user wins', coupon: 'open', body: (id) => issue(id, 'alice'), fast: true, expect: { status: 200, seq: '1', state: 'USER_COUPON_STATE_PENDING' } },
      { name: 'proto field names', coupon: 'open', body: (id) => JSON.stringify({ coupon_id: id, user_id: 'bob' }), fast: true, expect: { status: 200, seq: '2', state: 'USER_COUPON_STATE_PENDING' } },
      { name: 'the id in upper case', coupon: 'open', body: (id) => issue(id.toUpperCase(), 'carol'), fast: true, expect: { status: 200, seq: '3', state: 'USER_COUPON_STATE_PENDING' } },
      { name: 'charset in the content type', coupon: 'open', body: (id) => issue(id, 'dave'), headers: (a) => ({ 'content-type': 'application/json; charset=utf-8', authorization: a }), fast: true, expect: { status: 200, seq: '4', state: 'USER_COUPON_STATE_PENDING' } },
      { name: 'a timeout header (connect-es)', coupon: 'open', body: (id) => issue(id, 'erin'), headers: (a) => ({ ...json(a), 'connect-timeout-ms': '5000' }), fast: false, expect: { status: 200, seq: '5', state: 'USER_COUPON_STATE_PENDING' } },
      { name: 'sold out', coupon: 'soldOut', body: (id) => issue(id, 'late'), fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'the winner of a sold-out coupon', coupon: 'soldOut', body: (id) => issue(id, 'winner'), fast: true, expect: { status: 200, seq: '1' } },
      { name: 'paused', coupon: 'paused', body: (id) => issue(id, 'p'), fast: true, expect: bad('COUPON_PAUSED') },
      { name: 'not open yet', coupon: 'later', body: (id) => issue(id, 'p'), fast: true, expect: bad('COUPON_NOT_OPEN') },
      { name: 'an unknown coupon', coupon: 'open', body: () => issue(unknown, 'p'), fast: true, expect: bad('COUPON_NOT_FOUND', 404) },
      { name: 'an id that is no UUID', coupon: 'open', body: () => issue('not-a-uuid', 'p'), fast: true, expect: bad('INVALID_FIELD') },
      { name: 'an empty user id', coupon: 'open', body: (id) => issue(id, ''), fast: true, expect: bad('INVALID_FIELD') },
      { name: 'a user id with a control character', coupon: 'open', body: (id) => issue(id, 'a\u0001b'), fast: true, expect: bad('INVALID_FIELD') },
      { name: 'no user id', coupon: 'open', body: (id) => JSON.stringify({ couponId: id }), fast: true, expect: bad('INVALID_FIELD') },
      { name: 'an unknown field (connect-es)', coupon: 'open', body: (id) => JSON.stringify({ couponId: id, userId: 'p', extra: 1 }), fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'a number for a string (connect-es)', coupon: 'open', body: () => JSON.stringify({ couponId: 5, userId: 'p' }), fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'null for a field (connect-es)', coupon: 'open', body: (id) => JSON.stringify({ couponId: id, userId: null }), fast: false, expect: bad('INVALID_FIELD') },
      { name: 'both names of a field (connect-es)', coupon: 'open', body: (id) => JSON.stringify({ couponId: id, coupon_id: id, userId: 'p' }), fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'JSON cut short (connect-es)', coupon: 'open', body: (id) => `{"couponId":"${id}"`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'an array (connect-es)', coupon: 'open', body: () => '[]', fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'bytes that are not UTF-8 (connect-es)', coupon: 'open', body: (id) => Buffer.concat([Buffer.from(`{"couponId":"${id}","userId":"`), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]), fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'no bearer token', coupon: 'open', body: (id) => issue(id, 'p'), headers: () => ({ 'content-type': 'application/json' }), fast: true, expect: bad('TOKEN_MISSING', 401) },
      { name: 'a token that is not a JWT', coupon: 'open', body: (id) => issue(id, 'p'), headers: () => json('Bearer abc.def.ghi'), fast: true, expect: bad('TOKEN_INVALID', 401) },
      { name: 'a role IssueCoupon does not allow', coupon: 'open', body: (id) => issue(id, 'p'), headers: () => json(payment), fast: true, expect: bad('ROLE_NOT_ALLOWED', 403) },
    ];

    const answers: Record<string, [Answer, Answer]> = {};
    for (const c of cases) {
      const headers = (c.headers ?? json)(storefront);
      const counted = await fastCount(svc.api);
      const fast = await post(svc.api.url, c.body(sets[0]![c.coupon]), headers, sets[0]![c.coupon]);
      expect({ case: c.name, short: (await fastCount(svc.api)) - counted }).toEqual({ case: c.name, short: c.fast ? 1 : 0 });
      answers[c.name] = [fast, await post(slow.url, c.body(sets[1]![c.coupon]), headers, sets[1]![c.coupon])];
    }
    // Both servers gave each request the same answer ...
    for (const [name, [fast, viaConnect]] of Object.entries(answers)) expect({ name, ...fast }).toEqual({ name, ...viaConnect });
    // ... and it is the one the API promises.
    for (const c of cases) {
      const { status, body } = answers[c.name]![0];
      const b = body as { seq?: string; state?: string; details?: { type: string; value: string }[] };
      expect({ case: c.name, status, type: answers[c.name]![0].type }).toEqual({ case: c.name, status: c.expect.status, type: 'application/json' });
      if (c.expect.reason) expect({ case: c.name, reason: reasonOf(b.details) }).toEqual({ case: c.name, reason: c.expect.reason });
      if (c.expect.seq) expect({ case: c.name, seq: b.seq }).toEqual({ case: c.name, seq: c.expect.seq });
      if (c.expect.state) expect({ case: c.name, state: b.state }).toEqual({ case: c.name, state: c.expect.state });
    }
    // The server without the short path answered everything through connect-es.
    expect(await fastCount(slow)).toBe(0);

    // The winners hold their seqs in the gate and the ledger, once each, in both sets.
    for (const set of sets) {
      await until('the winners issued', async () => {
        const states = await Promise.all(['alice', 'bob', 'carol', 'dave', 'erin'].map((userId) => svc.client.getUserCoupon({ couponId: set.open, userId })));
        return states.every((s) => s.userCoupon!.state === UserCouponState.ISSUED) || undefined;
      }, 30_000);
      const coupon = (await svc.client.getCoupon({ couponId: set.open })).coupon!;
      expect({ accepted: coupon.acceptedCount, issued: coupon.issuedCount, remaining: coupon.remaining }).toEqual({ accepted: 5n, issued: 5n, remaining: 0n });
    }
  });
});
