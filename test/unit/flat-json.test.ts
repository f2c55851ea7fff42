// server/flat-json.ts reads IssueCoupon's usual body without JSON.parse. Whatever it reads must be
// exactly what the general reading (JSON.parse with short-path.ts's rules) makes of the same bytes,
// and it must read what storefronts send.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { create, equals, fromJsonString } from '@bufbuild/protobuf';
import { CouponService, IssueCouponRequestSchema } from '../../gen/coupon/v1/coupon_service_pb.js';
import { readFlatJson } from '../../src/server/flat-json.ts';

const fields = new Map([['couponId', 'couponId'], ['coupon_id', 'couponId'], ['userId', 'userId'], ['user_id', 'userId']]);

/** short-path.ts decodeJson's rules over JSON.parse: the oracle. */
function general(body: Uint8Array): Record<string, string> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const init: Record<string, string> = {};
  for (const key in value) {
    const local = fields.get(key);
    const v = (value as Record<string, unknown>)[key];
    if (local === undefined || typeof v !== 'string' || !v.isWellFormed() || Object.hasOwn(init, local)) return undefined;
    init[local] = v;
  }
  return init;
}

const bytes = (s: string) => new TextEncoder().encode(s);

describe('readFlatJson', () => {
  it('reads what storefronts send, with either field name and any JSON whitespace', () => {
    expect(readFlatJson(bytes('{"couponId":"0b9c3f52-1d2e-4c1b-9a55-6a1f0f2f9e11","userId":"u-1"}'), fields))
      .toEqual({ couponId: '0b9c3f52-1d2e-4c1b-9a55-6a1f0f2f9e11', userId: 'u-1' });
    expect(readFlatJson(bytes(' {\n\t"coupon_id" : "c" ,\r\n "user_id":"" } '), fields)).toEqual({ couponId: 'c', userId: '' });
    expect(readFlatJson(bytes('{}'), fields)).toEqual({});
  });

  it('leaves everything else to the general reading', () => {
    for (const body of [
      '{"couponId":"a","couponId":"b"}', '{"couponId":"a","coupon_id":"b"}', '{"couponId":"a\\u0041"}', '{"couponId":"é"}',
      '{"couponId":1}', '{"couponId":null}', '{"other":"x"}', '{"__proto__":"x"}', '{"couponId":"a"} x', '{"couponId":"a",}',
      '["couponId"]', '"x"', '', '{', '{"couponId":"a"', '\uFEFF{"couponId":"a"}', '{"couponId":"a\tb"}',
    ]) expect(readFlatJson(bytes(body), fields), body).toBeUndefined();
  });

  it('never reads a body differently from the general reading', () => {
    const piece = fc.constantFrom('{', '}', '"', ':', ',', ' ', '\n', '\\', 'couponId', 'coupon_id', 'userId', 'user_id', 'x', 'é', '\u0000', '\u007f', 'null', '1', '[', ']');
    const member = fc.tuple(fc.constantFrom('couponId', 'coupon_id', 'userId', 'user_id', 'other', '__proto__'), fc.string({ unit: 'binary' }))
      .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
    const body = fc.oneof(
      fc.array(piece, { maxLength: 30 }).map((p) => p.join('')),
      fc.array(member, { maxLength: 3 }).map((m) => `{${m.join(',')}}`),
      fc.json(),
    );
    fc.assert(fc.property(body, (s) => {
      const read = readFlatJson(bytes(s), fields);
      if (read !== undefined) expect(read).toEqual(general(bytes(s)));
    }), { numRuns: 20_000 });
    // And it reads the usual body whatever its strings are, when they are plain ASCII.
    fc.assert(fc.property(fc.stringMatching(/^[ -!#-[\]-~]*$/), fc.stringMatching(/^[ -!#-[\]-~]*$/), (c, u) => {
      expect(readFlatJson(bytes(JSON.stringify({ couponId: c, userId: u })), fields)).toEqual({ couponId: c, userId: u });
    }), { numRuns: 2_000 });
  });

  it('reads only bodies connect-es itself reads to the same message (TextDecoder fatal, fromJsonString, unknown fields refused)', () => {
    // Written by an independent review: the oracle is connect-es's own parse, not JSON.parse.
    const methodFields = new Map<string, string>();
    for (const f of CouponService.method.issueCoupon.input.fields) { methodFields.set(f.jsonName, f.localName); methodFields.set(f.name, f.localName); }
    const dec = new TextDecoder('utf-8', { fatal: true });
    const viaConnect = (b: Uint8Array) => { try { return fromJsonString(IssueCouponRequestSchema, dec.decode(b), { ignoreUnknownFields: false }); } catch { return 'ERR'; } };
    const latin1 = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
    const piece = fc.constantFrom('{', '}', '"', ':', ',', ' ', '\t', '\n', '\r', '\f', '\v', '\\', 'couponId', 'coupon_id', 'userId', 'user_id', 'CouponId', 'x', '\u007f', '\u0000', '\u00a0', '\u00ef\u00bb\u00bf', 'null', '1', '[', ']', '""');
    const key = fc.constantFrom('couponId', 'coupon_id', 'userId', 'user_id', 'couponid', 'COUPONID', 'couponID', 'coupon-id', 'couponId ', ' userId', '__proto__', 'constructor', 'toString', 'hasOwnProperty');
    const ascii = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7f }).map((c) => String.fromCharCode(c)).filter((c) => c !== '"' && c !== '\\'), maxLength: 6 });
    const ws = fc.constantFrom('', ' ', '\t', '\n', '\r', '\r\n ');
    const member = fc.tuple(ws, key, ws, ws, ascii, ws).map(([a, k, b, c, v, d]) => `${a}"${k}"${b}:${c}"${v}"${d}`);
    const body = fc.oneof(
      fc.array(piece, { maxLength: 30 }).map((p) => p.join('')),
      fc.tuple(ws, fc.array(member, { maxLength: 4 }), ws).map(([a, m, b]) => `${a}{${m.join(',')}}${b}`),
    );
    let accepted = 0;
    fc.assert(fc.property(body, (s) => {
      const b = latin1(s);
      const flat = readFlatJson(b, methodFields);
      if (flat === undefined) return;
      accepted++;
      const parsed = viaConnect(b);
      expect(parsed, JSON.stringify(s)).not.toBe('ERR');
      expect(equals(IssueCouponRequestSchema, create(IssueCouponRequestSchema, flat as never), parsed as never), JSON.stringify(s)).toBe(true);
    }), { numRuns: 30_000 });
    expect(accepted).toBeGreaterThan(500);
  });
});
