// Bytes that are not a request, sent by hand over plain HTTP: gRPC over HTTP/2 with its
// 5-byte length prefix, gRPC-Web with the same frames, Connect unary with the bare message, each in
// protobuf and JSON. Every refusal is checked for its code and its coupon.v1.ErrorDetail reason,
// and for having written nothing: the coupon's rows, its Redis keys and the coupon index are the
// same before and after.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import { create, toBinary, type DescService } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { Code } from '@connectrpc/connect';
import { CouponService, CreateCouponRequestSchema, GetCouponRequestSchema, GetCouponResponseSchema, GetUserCouponResponseSchema } from '../../gen/coupon/v1/coupon_service_pb.js';
import { UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import { createGrpcClient } from '../../src/client/grpc.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { couponState } from '../support/coupon-state.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { db as newDb, redis as newRedis, uniqueEnv } from '../support/stack.ts';
import { decodeResponse, encodeMessage, envelope, methodDesc, METHOD_NAMES, WireClient, wireName, WIRES, type Outcome } from '../support/wire.ts';

const env = uniqueEnv('bad-input');
const db = newDb();
const r = newRedis();
let api: ServiceProcess;
let grpcClient: CouponClient;
let wire: WireClient;
let couponId: string;

const te = (s: string) => new TextEncoder().encode(s);
const protoWires = WIRES.filter((w) => w.encoding === 'proto');
const jsonWires = WIRES.filter((w) => w.encoding === 'json');
const framedWires = WIRES.filter((w) => w.protocol !== 'connect');
/** One wire per protocol, protobuf and JSON both represented. */
const onePerProtocol = [WIRES.find((w) => w.protocol === 'grpc' && w.encoding === 'proto')!, WIRES.find((w) => w.protocol === 'grpc-web' && w.encoding === 'proto')!, WIRES.find((w) => w.protocol === 'connect' && w.encoding === 'json')!];

const state = () => couponState(db, r, [couponId], env.KAFKA_TOPIC_PREFIX);

/** Runs the calls, and checks that the stored state of the test's coupon (and the coupon index) did not change. */
async function writesNothing<T>(calls: () => Promise<T>): Promise<T> {
  const before = await state();
  const result = await calls();
  expect(await state()).toEqual(before);
  return result;
}

/** What a call answered, reduced to what these tests compare. */
const answer = (o: Outcome) => ({ code: o.codeName, reason: o.detail?.reason ?? '(no ErrorDetail)', field: o.detail?.field ?? '' });

beforeAll(async () => {
  api = await startService('api', { ...env, PUBLISH_TIMEOUT_MS: '30000', RECOVERY_STALE_MS: '60000' });
  grpcClient = couponClient(api.address);
  wire = new WireClient(api.url);
  couponId = (await createCoupon(grpcClient, 10, { closesInMs: 3_600_000, validForMs: 7_200_000 })).id;
  await grpcClient.issueCoupon({ couponId, userId: 'holder' });
});
afterAll(async () => {
  wire?.close();
  grpcClient?.close();
  await api?.stop();
  r.disconnect();
  await db.destroy();
});

describe('bytes that are not a request', () => {
  it('answers protobuf bytes that do not decode with INVALID_ARGUMENT, MALFORMED_REQUEST, on every RPC over gRPC, gRPC-Web and Connect', async () => {
    const garbage: [string, Uint8Array][] = [
      ['0xff bytes', new Uint8Array([0xff, 0xff, 0xff, 0xff])],
      ['a length running past the end', new Uint8Array([0x0a, 0x05, 0x61])],
      ['a truncated varint', new Uint8Array([0x10, 0xff])],
      ['a string that is not UTF-8', new Uint8Array([0x0a, 0x03, 0xed, 0xa0, 0x80])],
      ['field number 0', new Uint8Array([0x02, 0x00])],
      ['an end-group tag with no start', new Uint8Array([0x0c])],
    ];
    const answers = await writesNothing(async () => {
      const out: Record<string, unknown> = {};
      for (const w of protoWires) for (const method of METHOD_NAMES) for (const [name, bytes] of garbage) {
        out[`${wireName(w)} ${method} ${name}`] = answer(await wire.send(w, method, bytes));
      }
      return out;
    });
    for (const [call, got] of Object.entries(answers)) expect({ call, ...got as object }).toEqual({ call, code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field: '' });
  });

  it('answers JSON that does not fit the message with INVALID_ARGUMENT, MALFORMED_REQUEST, naming the field when one is at fault', async () => {
    const cases: [string, string, string, string][] = [
      // [case, method, body, field]
      ['bad syntax', 'GetCoupon', '{"couponId": ', ''],
      ['a number for a string', 'GetCoupon', '{"couponId": 5}', 'coupon_id'],
      ['an object for a string', 'IssueCoupon', '{"couponId": "c", "userId": {}}', 'user_id'],
      ['1e30 for an int64', 'CreateCoupon', '{"name": "n", "totalQuantity": 1e30}', 'total_quantity'],
      ['a fraction for an int64', 'CreateCoupon', '{"name": "n", "totalQuantity": 1.5}', 'total_quantity'],
      ['a string that is not a number for an int64', 'CreateCoupon', '{"name": "n", "totalQuantity": "ten"}', 'total_quantity'],
      ['2^31 for an int32', 'ListUserCoupons', '{"userId": "u", "pageSize": 2147483648}', 'page_size'],
      ['a lone surrogate', 'GetCoupon', '{"couponId": "\\ud800"}', 'coupon_id'],
      ['a lone low surrogate', 'RedeemCoupon', '{"couponId": "c", "userId": "u", "orderId": "o\\udc00"}', 'order_id'],
      ['a timestamp that is not RFC 3339', 'CreateCoupon', '{"name": "n", "totalQuantity": "1", "opensAt": "tomorrow"}', ''],
      ['an array body', 'GetCoupon', '[]', ''],
      ['a null body', 'GetCoupon', 'null', ''],
      ['a string body', 'GetCoupon', '"x"', ''],
      ['an empty body', 'GetCoupon', '', ''],
      ['a field given twice', 'GetCoupon', '{"couponId": "a", "coupon_id": "b"}', 'coupon_id'],
      ['a key the message does not have', 'GetCoupon', '{"couponId": "a", "couponID": "b"}', ''],
      ['a misspelt optional field', 'CreateCoupon', '{"name": "n", "totalQuantity": "1", "closeAt": "2030-01-01T00:00:00Z"}', ''],
    ];
    const answers = await writesNothing(async () => {
      const out: Record<string, unknown> = {};
      for (const w of jsonWires) for (const [name, method, body] of cases) out[`${wireName(w)} ${name}`] = answer(await wire.send(w, method, te(body)));
      return out;
    });
    for (const w of jsonWires) for (const [name, , , field] of cases) {
      expect({ call: `${wireName(w)} ${name}`, ...answers[`${wireName(w)} ${name}`] as object }).toEqual({ call: `${wireName(w)} ${name}`, code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field });
    }
  });

  it('ends a gRPC and gRPC-Web call whose JSON error message would quote half an astral character', async () => {
    // V8's JSON.parse error quotes the body, cut at a code unit: here between the two halves of
    // U+1D160, so the message holds a lone surrogate, which grpc-message cannot carry.
    const body = te('Id":"\u{1D158}\u{1D165}\u{1D16F}\u{14521}","userId":"nobody"}');
    for (const w of jsonWires) {
      expect(answer(await wire.send(w, 'GetUserCoupon', body, { timeoutMs: 5_000 }))).toEqual({ code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field: '' });
    }
    const health = await wire.send(WIRES[1]!, 'Check', body, { path: '/grpc.health.v1.Health/Check', timeoutMs: 5_000 });
    expect(health.codeName).toBe('invalid_argument');
  });

  it('refuses a JSON body that is not UTF-8 instead of storing U+FFFD in its place', async () => {
    const body = new Uint8Array([...te('{"name": "caf'), 0xff, ...te('", "totalQuantity": "1"}')]);
    await writesNothing(async () => {
      for (const w of jsonWires) expect(answer(await wire.send(w, 'CreateCoupon', body))).toEqual({ code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field: '' });
    });
  });

  it('skips fields it does not know in protobuf binary, as protobuf requires, so a newer client still works', async () => {
    const known = toBinary(GetCouponRequestSchema, create(GetCouponRequestSchema, { couponId }));
    const withUnknown = new Uint8Array([...known, 0xa2, 0x06, 0x03, 0x61, 0x62, 0x63]); // field 100, "abc"
    for (const w of protoWires) {
      const o = await wire.send(w, 'GetCoupon', withUnknown);
      expect(o.codeName).toBe('ok');
      expect(decodeResponse(w, GetCouponResponseSchema, o.body!).coupon?.id).toBe(couponId);
    }
  });

  it('refuses gRPC and gRPC-Web bodies without exactly one whole length-prefixed message', async () => {
    const message = toBinary(GetCouponRequestSchema, create(GetCouponRequestSchema, { couponId }));
    const bodies: [string, Uint8Array][] = [
      ['no message at all', new Uint8Array(0)],
      ['two messages', new Uint8Array([...envelope(message), ...envelope(message)])],
      ['a frame cut short', envelope(message).subarray(0, 8)],
      ['a length prefix cut short', new Uint8Array([0, 0, 0])],
      ['the compressed flag with no grpc-encoding', envelope(message, 1)],
    ];
    const answers = await writesNothing(async () => {
      const out: Record<string, unknown> = {};
      for (const w of framedWires) for (const [name, body] of bodies) out[`${wireName(w)} ${name}`] = answer(await wire.send(w, 'GetCoupon', body, { raw: true }));
      return out;
    });
    for (const [call, got] of Object.entries(answers)) expect({ call, ...got as object }).toEqual({ call, code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field: '' });
  });

  it('answers a message over the size limit with RESOURCE_EXHAUSTED, REQUEST_TOO_LARGE: sent, only declared, or after decompression', async () => {
    const tooBig = new Uint8Array(70_000).fill(0x41);
    await writesNothing(async () => {
      for (const w of WIRES) expect({ w: wireName(w), ...answer(await wire.send(w, 'IssueCoupon', tooBig)) }).toEqual({ w: wireName(w), code: 'resource_exhausted', reason: 'REQUEST_TOO_LARGE', field: '' });
      for (const w of framedWires) {
        // A prefix announcing 2 GiB; the server must answer without waiting for it.
        expect(answer(await wire.send(w, 'IssueCoupon', envelope(new Uint8Array(16), 0, 0x7fffffff), { raw: true }))).toEqual({ code: 'resource_exhausted', reason: 'REQUEST_TOO_LARGE', field: '' });
        // 16 KiB of gzip that inflates to 1 MiB.
        const bomb = envelope(gzipSync(Buffer.concat([Buffer.from([0x0a, 0x80, 0x80, 0x40]), Buffer.alloc(1 << 20, 0x61)])), 1);
        expect(answer(await wire.send(w, 'IssueCoupon', bomb, { raw: true, headers: { 'grpc-encoding': 'gzip' } }))).toEqual({ code: 'resource_exhausted', reason: 'REQUEST_TOO_LARGE', field: '' });
      }
    });
  });

  it('answers corrupt compressed data with MALFORMED_REQUEST, and a compression it does not know with UNIMPLEMENTED, UNSUPPORTED_COMPRESSION', async () => {
    await writesNothing(async () => {
      for (const w of WIRES) {
        const framed = w.protocol !== 'connect';
        const corrupt = framed ? envelope(new Uint8Array([1, 2, 3, 4]), 1) : new Uint8Array([1, 2, 3, 4]);
        const encoding = framed ? 'grpc-encoding' : 'content-encoding';
        expect(answer(await wire.send(w, 'GetCoupon', corrupt, { raw: true, headers: { [encoding]: 'gzip' } }))).toEqual({ code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field: '' });
        const o = await wire.send(w, 'GetCoupon', framed ? envelope(new Uint8Array(0), 1) : new Uint8Array(0), { raw: true, headers: { [encoding]: 'zstd' } });
        expect(answer(o)).toEqual({ code: 'unimplemented', reason: 'UNSUPPORTED_COMPRESSION', field: '' });
        expect(o.message).toMatch(/gzip/);
      }
    });
  });

  it('answers an unreadable timeout header with MALFORMED_REQUEST', async () => {
    for (const w of WIRES) {
      const header = w.protocol === 'connect' ? 'connect-timeout-ms' : 'grpc-timeout';
      expect(answer(await wire.send(w, 'GetCoupon', encodeMessage(w, GetCouponRequestSchema, { couponId }), { headers: { [header]: 'soon' } }))).toEqual({ code: 'invalid_argument', reason: 'MALFORMED_REQUEST', field: '' });
    }
  });

  it('answers a method the service does not have with UNIMPLEMENTED, UNKNOWN_METHOD, also to @grpc/grpc-js', async () => {
    for (const w of WIRES) expect({ w: wireName(w), ...answer(await wire.send(w, 'RefundCoupon', new Uint8Array(0))) }).toEqual({ w: wireName(w), code: 'unimplemented', reason: 'UNKNOWN_METHOD', field: '' });
    const getCoupon = methodDesc('GetCoupon');
    const newer = { ...CouponService, methods: [{ ...getCoupon, name: 'RefundCoupon', localName: 'refundCoupon' }] } as unknown as DescService;
    const client = createGrpcClient(newer, api.address) as unknown as { refundCoupon(req: object): Promise<unknown>; close(): void };
    try {
      const err = await callError(client.refundCoupon({ couponId }));
      expect({ code: err.code, reason: err.reason }).toEqual({ code: grpc.status.UNIMPLEMENTED, reason: 'UNKNOWN_METHOD' });
    } finally { client.close(); }
  });

  it('leaves only the bare HTTP refusals error.proto lists: 415 for a content type of no protocol, 405 for GET, 404 outside the service', async () => {
    const [grpcWire, , webWire] = [WIRES[0]!, WIRES[1]!, WIRES[2]!];
    const bare = (o: Outcome) => ({ http: o.http, bare: o.bareHttp, detail: o.detail });
    for (const w of WIRES) {
      expect(bare(await wire.send(w, 'GetCoupon', new Uint8Array(0), { headers: { 'content-type': 'text/plain' } }))).toEqual({ http: 415, bare: true, detail: undefined });
    }
    expect(bare(await wire.send(webWire, 'GetCoupon', new Uint8Array(0), { headers: { 'content-type': 'application/grpc-web-text' } }))).toEqual({ http: 415, bare: true, detail: undefined });
    const connect = WIRES.find((w) => w.protocol === 'connect')!;
    expect(bare(await wire.send(connect, 'GetCoupon', new Uint8Array(0), { httpMethod: 'GET' }))).toEqual({ http: 405, bare: true, detail: undefined });
    expect(bare(await wire.send(grpcWire, 'GetCoupon', new Uint8Array(0), { path: '/coupon.v2.CouponService/GetCoupon' }))).toEqual({ http: 404, bare: true, detail: undefined });
    // A gRPC client reads a bare 404 as UNIMPLEMENTED.
    expect((await wire.send(grpcWire, 'GetCoupon', new Uint8Array(0), { path: '/coupon.v2.CouponService/GetCoupon' })).code).toBe(Code.Unimplemented);
  });

  it('stays healthy after all of it', async () => {
    const health = await wire.send(WIRES[0]!, 'Check', new Uint8Array(0), { path: '/grpc.health.v1.Health/Check' });
    expect(health.codeName).toBe('ok');
    expect([...health.body!]).toEqual([0x08, 0x01]); // status: SERVING
    expect(api.child.exitCode).toBeNull();
  });
});

describe('ids', () => {
  const refused: [string, string][] = [
    ['a right-to-left override', 'abc\u202edcba'],
    ['a bidi isolate', 'a\u2066b\u2069'],
    ['a zero-width space', 'ali\u200bce'],
    ['a zero-width joiner', 'a\u200db'],
    ['a byte-order mark', '\ufeffalice'],
    ['a soft hyphen', 'al\u00adice'],
    ['a space', 'alice smith'],
    ['a no-break space', 'alice\u00a0'],
    ['an ideographic space', '\u3000alice'],
    ['a tab', 'alice\t'],
    ['a pipe', 'auth0|42'],
    ['braces', 'a{b}'],
    ['an emoji', 'alice😀'],
    ['U+FFFD', 'alice\ufffd'],
    ['a private-use character', 'alice\ue000'],
    ['an unassigned code point', 'alice\u0378'],
    ['markup', '<script>'],
    ['a quote', "o'brien"],
    ['a percent sign', 'a%20b'],
    ['a combining mark first', '\u0301alice'],
    ['a decomposed é (not NFC)', 'cafe\u0301'],
    ['129 characters', 'x'.repeat(129)],
    ['nothing', ''],
  ];
  const accepted = ['alice', 'alice.smith+coupons@example.com', 'urn:user:42', 'dGVzdA+/=', 'a_b-c', '사용자', 'ユーザー', 'пользователь', 'مستخدم٣', 'नमस्ते', 'café', '0f5d2c1e-7d4a-4c1b-9e2f-3a4b5c6d7e8f', '사용자'.repeat(42) + 'ab'];

  it('refuses ids outside the alphabet with INVALID_ARGUMENT, INVALID_FIELD naming the field, on every id field and protocol (bidi overrides and zero-width characters were accepted)', async () => {
    const answers = await writesNothing(async () => {
      const out: Record<string, unknown> = {};
      for (const w of onePerProtocol) for (const [name, bad] of refused) {
        out[`${wireName(w)} coupon_id ${name}`] = answer(await wire.send(w, 'GetCoupon', encodeMessage(w, methodDesc('GetCoupon').input, { couponId: bad })));
        out[`${wireName(w)} user_id ${name}`] = answer(await wire.send(w, 'IssueCoupon', encodeMessage(w, methodDesc('IssueCoupon').input, { couponId, userId: bad })));
        out[`${wireName(w)} order_id ${name}`] = answer(await wire.send(w, 'RedeemCoupon', encodeMessage(w, methodDesc('RedeemCoupon').input, { couponId, userId: 'holder', orderId: bad })));
      }
      return out;
    });
    for (const [call, got] of Object.entries(answers)) {
      const field = call.split(' ')[1];
      expect({ call, ...got as object }).toEqual({ call, code: 'invalid_argument', reason: 'INVALID_FIELD', field });
    }
  });

  it('accepts ids of any script made of letters, marks, digits and - _ . : @ / + =', async () => {
    const couponId = (await createCoupon(grpcClient, 100)).id;
    for (const [i, userId] of accepted.entries()) {
      const w = onePerProtocol[i % onePerProtocol.length]!;
      expect(answer(await wire.send(w, 'IssueCoupon', encodeMessage(w, methodDesc('IssueCoupon').input, { couponId, userId })))).toEqual({ code: 'ok', reason: '(no ErrorDetail)', field: '' });
      const got = await wire.send(w, 'GetUserCoupon', encodeMessage(w, methodDesc('GetUserCoupon').input, { couponId, userId }));
      const userCoupon = decodeResponse(w, GetUserCouponResponseSchema, got.body!).userCoupon!;
      expect({ userId: userCoupon.userId, state: userCoupon.state }).toEqual({ userId, state: UserCouponState.PENDING });
    }
  });
});

describe('CreateCoupon windows', () => {
  it('refuses a valid_until before closes_at with INVALID_FIELD valid_until, and accepts one equal to it', async () => {
    const now = Date.now();
    const init = (validUntilMs: number) => ({
      name: 'window', totalQuantity: 5n,
      opensAt: timestampFromDate(new Date(now)), closesAt: timestampFromDate(new Date(now + 60_000)), validUntil: timestampFromDate(new Date(validUntilMs)),
    });
    await writesNothing(async () => {
      for (const w of onePerProtocol) {
        expect(answer(await wire.send(w, 'CreateCoupon', encodeMessage(w, CreateCouponRequestSchema, init(now + 30_000))))).toEqual({ code: 'invalid_argument', reason: 'INVALID_FIELD', field: 'valid_until' });
      }
    });
    const err = await callError(grpcClient.createCoupon(init(now + 59_999)));
    expect({ code: err.code, reason: err.reason, field: err.field }).toEqual({ code: grpc.status.INVALID_ARGUMENT, reason: 'INVALID_FIELD', field: 'valid_until' });
    const equal = await grpcClient.createCoupon(init(now + 60_000));
    expect(equal.coupon?.validUntil).toEqual(equal.coupon?.closesAt);
  });
});
