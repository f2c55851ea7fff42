// The short path for IssueCoupon (src/server/short-path.ts) answers exactly as connect-es does. Two
// real coupon-api processes on the same stack, one with the short path (the default) and one
// without (API_SHORT_PATH=false), get the same requests: over Connect JSON and plain HTTP/1.1, and
// over gRPC on h2c with node:http2 (so every header, data frame and trailer is seen): well formed
// and malformed bodies, every spelling the JSON mapping allows, headers the short path leaves to
// connect-es, missing and wrong credentials, and every state of a coupon. Each pair of answers must
// be equal (status, headers but the date, body, trailers, error details decoded), and each answer
// must be what the API promises (docs/api.md). The short path's counter shows which requests it
// answered itself.
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { create, fromBinary, toBinary, toJson } from '@bufbuild/protobuf';
import { IssueCouponRequestSchema, IssueCouponResponseSchema } from '../../gen/coupon/v1/coupon_service_pb.js';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';
import { scrape, sumOf } from '../../src/metrics/text-format.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { tokenFor } from '../support/auth.ts';
import { createCoupon, decided } from '../support/coupons.ts';
import { fileServices } from '../support/services.ts';
import { until } from '../support/stack.ts';

const svc = fileServices('short-path', { API_WORKERS: '1' });
let slow: ServiceProcess;
beforeAll(async () => { slow = await startService('api', { ...svc.env, API_SHORT_PATH: 'false' }); }, 120_000);
afterAll(async () => { await slow?.stop(); });

interface Answer { status: number; type: string | null; headers: string[]; body: unknown }

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
  const answerHeaders = [...res.headers].filter(([k]) => k !== 'date').map(([k, v]) => `${k}: ${v}`);
  return { status: res.status, type: res.headers.get('content-type'), headers: answerHeaders, body: parsed };
}

const envelope = (payload: Uint8Array) => { const b = Buffer.alloc(5 + payload.byteLength); b.writeUInt32BE(payload.byteLength, 1); b.set(payload, 5); return b; };
const grpcBody = (couponId: string, userId: string, extra = Buffer.alloc(0)) =>
  envelope(Buffer.concat([toBinary(IssueCouponRequestSchema, create(IssueCouponRequestSchema, { couponId, userId })), extra]));

interface GrpcAnswer { headers: string[]; body: string; trailers: Record<string, string> }

/** One gRPC call on h2c with node:http2: the response headers (but the date), the body's bytes, the trailers (coupon id replaced, binary ones decoded). */
function grpcCall(url: string, headers: Record<string, string>, body: Buffer, couponId: string): Promise<GrpcAnswer> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(url);
    client.on('error', (err: Error) => reject(err));
    const req = client.request({ ':method': 'POST', ':path': '/coupon.v1.CouponService/IssueCoupon', ...headers });
    const answer: GrpcAnswer = { headers: [], body: '', trailers: {} };
    const chunks: Buffer[] = [];
    const clean = (v: string) => v.replaceAll(couponId, '<id>').replaceAll(encodeURIComponent(couponId), '<id>');
    req.on('response', (h) => { answer.headers = Object.entries(h as Record<string, unknown>).filter(([k]) => k !== 'date').map(([k, v]) => `${k}: ${String(v)}`).sort(); });
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('trailers', (t) => {
      for (const [k, v] of Object.entries(t as Record<string, unknown>)) answer.trailers[k] = clean(k.endsWith('-bin') ? Buffer.from(String(v), 'base64').toString('latin1') : String(v));
    });
    req.on('end', () => { answer.body = Buffer.concat(chunks).toString('hex'); client.close(); resolve(answer); });
    req.on('error', (err: Error) => { client.close(); reject(err); });
    req.end(body);
  });
}

/** The coupon.v1.ErrorDetail reason of a Connect JSON error body. */
function reasonOf(details: { type: string; value: string }[] | undefined): string | undefined {
  const detail = details?.find((d) => d.type === ErrorDetailSchema.typeName);
  return detail && (JSON.parse(detail.value) as { reason?: string }).reason;
}

const fastCount = async (api: ServiceProcess, protocol = 'connect') => sumOf(await scrape(api.metricsUrl), 'coupon_rpc_short_path_total', { grpc_method: 'IssueCoupon', protocol });

type Case = { name: string; body: (id: string) => string | Uint8Array; headers?: (auth: string) => Record<string, string>; fast: boolean; expect: { status: number; reason?: string; seq?: string; state?: string } };

const json = (auth: string) => ({ 'content-type': 'application/json', authorization: auth });
const issue = (couponId: string, userId: string) => JSON.stringify({ couponId, userId });

describe('IssueCoupon over Connect JSON and gRPC', () => {
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
      const grpcOpen = await createCoupon(svc.client, 6, { validForMs: 3_600_000 });
      return { open: open.id, soldOut: soldOut.id, paused: paused.id, later: later.id, grpcOpen: grpcOpen.id };
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
      { name: 'a repeated key (connect-es)', coupon: 'open', body: (id) => `{"couponId":"${id}","userId":"first","userId":"second"}`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'a repeated key, escaped (connect-es)', coupon: 'open', body: (id) => `{"couponId":"${id}","userId":"first","\\u0075serId":"second"}`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'a colon inside a value', coupon: 'soldOut', body: (id) => issue(id, 'a:b'), fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'an escaped quote and backslash inside a value', coupon: 'soldOut', body: (id) => issue(id, 'a"b\\'), fast: true, expect: bad('INVALID_FIELD') },
      { name: 'a lone surrogate escaped (connect-es)', coupon: 'open', body: (id) => `{"couponId":"${id}","userId":"a\\ud800b"}`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'two spaces before the charset (connect-es: not a content type it serves)', coupon: 'open', body: (id) => issue(id, 'p'), headers: (a) => ({ 'content-type': 'application/json;  charset=utf-8', authorization: a }), fast: false, expect: { status: 415 } },
      // More bodies and headers (found by an independent review; sold-out answers are the shared refusal objects).
      { name: 'a DEL byte in a user id', coupon: 'soldOut', body: (id) => Buffer.from(`{"couponId":"${id}","userId":"a\u007fb"}`, 'latin1'), fast: true, expect: bad('INVALID_FIELD') },
      { name: 'JSON whitespace everywhere', coupon: 'soldOut', body: (id) => ` \r\n{\t"couponId" \n:\r"${id}"\t,\n"userId"\r: "late2" }\r\n\t`, fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'keys reversed, mixed names', coupon: 'soldOut', body: (id) => `{"user_id":"late3","couponId":"${id}"}`, fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'the id in upper case, sold out', coupon: 'soldOut', body: (id) => issue(id.toUpperCase(), 'late4'), fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'the id in mixed case, sold out, over HTTP with lower-case bearer', coupon: 'soldOut', body: (id) => issue(id.replace(/[a-f]/g, (c, i: number) => (i % 2 ? c.toUpperCase() : c)), 'late5'), headers: (a) => json(a.replace('Bearer', 'bearer')), fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'an empty object', coupon: 'open', body: () => '{}', fast: true, expect: bad('INVALID_FIELD') },
      { name: 'a key in another case (connect-es)', coupon: 'soldOut', body: (id) => `{"CouponId":"${id}","userId":"x"}`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'a UTF-8 BOM first', coupon: 'soldOut', body: (id) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(issue(id, 'late6'))]), fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'an escaped NUL in a user id', coupon: 'soldOut', body: (id) => `{"couponId":"${id}","userId":"a\\u0000"}`, fast: true, expect: bad('INVALID_FIELD') },
      { name: 'a form feed between tokens (connect-es)', coupon: 'soldOut', body: (id) => `{\f"couponId":"${id}","userId":"x"}`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: '__proto__ (connect-es)', coupon: 'soldOut', body: (id) => `{"__proto__":"x","couponId":"${id}","userId":"x"}`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'a repeated key with spaces (connect-es)', coupon: 'soldOut', body: (id) => `{"userId" : "a" , "userId":"b","couponId":"${id}"}`, fast: false, expect: bad('MALFORMED_REQUEST') },
      { name: 'a 129-character user id', coupon: 'soldOut', body: (id) => issue(id, 'x'.repeat(129)), fast: true, expect: bad('INVALID_FIELD') },
      { name: 'a non-ASCII user id', coupon: 'soldOut', body: (id) => issue(id, 'José'), fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
      { name: 'the sold-out refusal again', coupon: 'soldOut', body: (id) => issue(id, 'late7'), fast: true, expect: bad('COUPON_SOLD_OUT', 429) },
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
      expect({ case: c.name, status, type: answers[c.name]![0].type }).toEqual({ case: c.name, status: c.expect.status, type: c.expect.status === 415 ? null : 'application/json' });
      if (c.expect.reason) expect({ case: c.name, reason: reasonOf(b.details) }).toEqual({ case: c.name, reason: c.expect.reason });
      if (c.expect.seq) expect({ case: c.name, seq: b.seq }).toEqual({ case: c.name, seq: c.expect.seq });
      if (c.expect.state) expect({ case: c.name, state: b.state }).toEqual({ case: c.name, state: c.expect.state });
    }
    // The server without the short path answered everything through connect-es.
    expect(await fastCount(slow)).toBe(0);

    // The same over gRPC (h2c).
    const grpcCases: { name: string; coupon: keyof (typeof sets)[number]; body: (id: string) => Buffer; headers?: Record<string, string>; auth?: string; fast: boolean; expect: { status: string; reason?: string } }[] = [
      { name: 'a new user wins', coupon: 'grpcOpen', body: (id) => grpcBody(id, 'galice'), fast: true, expect: { status: '0' } },
      { name: 'the id in upper case', coupon: 'grpcOpen', body: (id) => grpcBody(id.toUpperCase(), 'gbob'), fast: true, expect: { status: '0' } },
      { name: 'application/grpc', coupon: 'grpcOpen', body: (id) => grpcBody(id, 'gcarol'), headers: { 'content-type': 'application/grpc' }, fast: true, expect: { status: '0' } },
      { name: "@grpc/grpc-js's headers (a timeout, accepted encodings)", coupon: 'grpcOpen', body: (id) => grpcBody(id, 'gdave'), headers: { 'grpc-timeout': '4999m', 'grpc-accept-encoding': 'identity,deflate,gzip', te: 'trailers' }, fast: true, expect: { status: '0' } },
      { name: 'a field this server does not know', coupon: 'grpcOpen', body: (id) => grpcBody(id, 'gerin', Buffer.from([0x78, 0x01])), fast: true, expect: { status: '0' } },
      { name: 'the winner again', coupon: 'grpcOpen', body: (id) => grpcBody(id, 'galice'), fast: true, expect: { status: '0' } },
      { name: 'sold out', coupon: 'soldOut', body: (id) => grpcBody(id, 'late'), fast: true, expect: { status: '8', reason: 'COUPON_SOLD_OUT' } },
      { name: 'paused', coupon: 'paused', body: (id) => grpcBody(id, 'p'), fast: true, expect: { status: '9', reason: 'COUPON_PAUSED' } },
      { name: 'an unknown coupon', coupon: 'open', body: () => grpcBody(unknown, 'p'), fast: true, expect: { status: '5', reason: 'COUPON_NOT_FOUND' } },
      { name: 'an id that is no UUID', coupon: 'open', body: () => grpcBody('nope', 'p'), fast: true, expect: { status: '3', reason: 'INVALID_FIELD' } },
      { name: 'no bearer token', coupon: 'open', body: (id) => grpcBody(id, 'p'), auth: '', fast: true, expect: { status: '16', reason: 'TOKEN_MISSING' } },
      { name: 'a role IssueCoupon does not allow', coupon: 'open', body: (id) => grpcBody(id, 'p'), auth: payment, fast: true, expect: { status: '7', reason: 'ROLE_NOT_ALLOWED' } },
      { name: 'an invalid timeout (connect-es)', coupon: 'soldOut', body: (id) => grpcBody(id, 'p'), headers: { 'grpc-timeout': 'soon' }, fast: false, expect: { status: '3' } },
      { name: 'two messages (connect-es)', coupon: 'soldOut', body: (id) => Buffer.concat([grpcBody(id, 'p'), grpcBody(id, 'q')]), fast: false, expect: { status: '3', reason: 'MALFORMED_REQUEST' } },
      { name: 'a message cut short (connect-es)', coupon: 'soldOut', body: (id) => grpcBody(id, 'p').subarray(0, 20), fast: false, expect: { status: '3', reason: 'MALFORMED_REQUEST' } },
      { name: 'the compressed flag without an encoding (connect-es)', coupon: 'soldOut', body: (id) => Buffer.concat([Buffer.from([1]), grpcBody(id, 'p').subarray(1)]), fast: false, expect: { status: '3' } },
      { name: 'bytes that are no message (connect-es)', coupon: 'soldOut', body: () => envelope(Buffer.from([0xff, 0xff, 0xff])), fast: false, expect: { status: '3', reason: 'MALFORMED_REQUEST' } },
      { name: 'gRPC with JSON (connect-es)', coupon: 'soldOut', body: (id) => envelope(Buffer.from(issue(id, 'p'))), headers: { 'content-type': 'application/grpc+json' }, fast: false, expect: { status: '8', reason: 'COUPON_SOLD_OUT' } },
    ];
    const grpcAnswers: Record<string, [GrpcAnswer, GrpcAnswer]> = {};
    for (const c of grpcCases) {
      const headers = { 'content-type': 'application/grpc+proto', ...(c.auth === '' ? {} : { authorization: c.auth ?? storefront }), ...c.headers };
      const counted = await fastCount(svc.api, 'grpc');
      const fast = await grpcCall(svc.api.url, headers, c.body(sets[0]![c.coupon]), sets[0]![c.coupon]);
      expect({ case: c.name, short: (await fastCount(svc.api, 'grpc')) - counted }).toEqual({ case: c.name, short: c.fast ? 1 : 0 });
      grpcAnswers[c.name] = [fast, await grpcCall(slow.url, headers, c.body(sets[1]![c.coupon]), sets[1]![c.coupon])];
    }
    for (const [name, [fast, viaConnect]] of Object.entries(grpcAnswers)) expect({ name, ...fast }).toEqual({ name, ...viaConnect });
    for (const c of grpcCases) {
      const { trailers } = grpcAnswers[c.name]![0];
      expect({ case: c.name, status: trailers['grpc-status'] }).toEqual({ case: c.name, status: c.expect.status });
      if (c.expect.reason) expect(trailers['grpc-status-details-bin'], c.name).toContain(c.expect.reason);
    }
    // The winners' answers carry their seqs, in order.
    const seqOf = (a: GrpcAnswer) => fromBinary(IssueCouponResponseSchema, Buffer.from(a.body, 'hex').subarray(5)).seq;
    expect(['a new user wins', 'the id in upper case', 'application/grpc', "@grpc/grpc-js's headers (a timeout, accepted encodings)", 'a field this server does not know', 'the winner again'].map((n) => seqOf(grpcAnswers[n]![0])))
      .toEqual([1n, 2n, 3n, 4n, 5n, 1n]);
    expect(await fastCount(slow, 'grpc')).toBe(0);

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
