// What the fuzzer sends: fast-check arbitraries of whole calls (a protocol, an RPC, the bytes and
// headers). The messages are built from the generated schemas in gen/coupon/v1, so every field of
// every request is covered as the contract evolves, with values drawn toward what matters: the
// fuzz coupons and users, ids at and over the limits, every kind of Unicode, timestamps out of range,
// int64 extremes; and plausible ones, which get past validation into the gate and redemption. Around them: the same messages mutated (bit flips, truncation, insertion,
// deletion, duplication), random bytes, and frames that lie (cut short, oversized, several or none,
// a wrong flag, compressed).
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { create, ScalarType, toBinary, toJsonString, type DescField, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { CouponService } from '../gen/coupon/v1/coupon_service_pb.js';
import { reflect } from '@bufbuild/protobuf/reflect';
import { envelope, WIRES, wireName, type Wire } from '../test/support/wire.ts';

/** What the fuzzer knows about the server it calls. */
export interface Pools {
  couponIds: string[];
  userIds: string[];
  orderIds: string[];
  /** (coupon id, user id) pairs the seeding issued, so plausible calls reach redemption decisions. */
  holdings: [string, string][];
  /** The server's API_MAX_MESSAGE_BYTES. */
  maxMessageBytes: number;
}

export type CallKind = 'plausible' | 'message' | 'mutated' | 'random-bytes' | 'frame' | 'compressed';

export interface Call {
  wire: Wire;
  method: string;
  kind: CallKind;
  /** What was done to the bytes, for the report and for a shrunk counterexample. */
  how: string;
  payload: Uint8Array;
  /** The payload is the whole body (gRPC and gRPC-Web frames already made). */
  raw: boolean;
  headers: Record<string, string>;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
// Timestamps the server accepts are 1970..9999; the arbitraries go past both ends.
const MAX_SECONDS = 253402300799n;

const idAlphabet = fc.constantFrom(...'abcxyzABC0189-_.:@/+=사용자ユーザпользمستخدم٣नमस्ते'.split(''));

/** Strings for an id field: the known ones, valid ones, limits, and every kind of Unicode. */
function idArb(known: string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: fc.constantFrom(...known), weight: 6 },
    { arbitrary: fc.string({ unit: idAlphabet, minLength: 1, maxLength: 24 }), weight: 2 },
    { arbitrary: fc.constantFrom('', 'x'.repeat(128), 'x'.repeat(129), '사'.repeat(128), 'a\u202eb', 'a\u200bb', '\ufeffa', 'a b', 'a|b', 'e\u0301', '\u0301e', 'a\ufffd', 'a\ud800', '\udc00'), weight: 2 },
    { arbitrary: fc.uuid(), weight: 1 },
    { arbitrary: fc.string({ unit: 'grapheme', maxLength: 16 }), weight: 1 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 16 }), weight: 1 },
  );
}

function textArb(): fc.Arbitrary<string> {
  return fc.oneof(
    { arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 40 }), weight: 4 },
    { arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }), weight: 2 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 1 },
    { arbitrary: fc.constantFrom('', ' ', 'x'.repeat(200), 'x'.repeat(201), 'a\u0000b', 'a\nb'), weight: 1 },
  );
}

function pageTokenArb(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constant(''),
    fc.string({ maxLength: 40 }),
    fc.record({ t: fc.string(), c: fc.oneof(fc.uuid(), fc.string()), u: fc.string() }).map((o) => Buffer.from(JSON.stringify(o)).toString('base64url')),
    fc.record({ t: fc.string(), c: fc.oneof(fc.uuid(), fc.string()), f: fc.string() }).map((o) => Buffer.from(JSON.stringify(o)).toString('base64url')),
    fc.constant('x'.repeat(1_025)),
  );
}

function int64Arb(): fc.Arbitrary<bigint> {
  return fc.oneof(
    { arbitrary: fc.bigInt({ min: -3n, max: 20n }), weight: 4 },
    { arbitrary: fc.constantFrom(0n, 1n, 10_000_000n, 10_000_001n, 1_000_000_000n, 1_000_000_001n, INT64_MIN, INT64_MAX), weight: 2 },
    { arbitrary: fc.bigInt({ min: INT64_MIN, max: INT64_MAX }), weight: 1 },
  );
}

function int32Arb(): fc.Arbitrary<number> {
  return fc.oneof({ arbitrary: fc.integer({ min: -2, max: 1_100 }), weight: 3 }, { arbitrary: fc.constantFrom(0, 1_000, 1_001, -1, 2 ** 31 - 1, -(2 ** 31)), weight: 1 }, { arbitrary: fc.integer(), weight: 1 });
}

function timestampArb(): fc.Arbitrary<{ seconds: bigint; nanos: number }> {
  const now = BigInt(Math.floor(Date.now() / 1_000));
  return fc.record({
    seconds: fc.oneof(
      { arbitrary: fc.bigInt({ min: now - 3_600n, max: now + 7_200n }), weight: 4 },
      { arbitrary: fc.constantFrom(0n, -1n, MAX_SECONDS, MAX_SECONDS + 1n, INT64_MIN, INT64_MAX), weight: 1 },
      { arbitrary: fc.bigInt({ min: INT64_MIN, max: INT64_MAX }), weight: 1 },
    ),
    nanos: fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, { arbitrary: fc.integer({ min: -1, max: 1_000_000_000 }), weight: 1 }, { arbitrary: fc.integer(), weight: 1 }),
  });
}

/**
 * `plausible`: values a well-behaved client would send (known ids, small numbers, times near now), so
 * that calls get past validation into the gate and the redemption state machine.
 */
function nearNowArb(): fc.Arbitrary<{ seconds: bigint; nanos: number }> {
  const now = BigInt(Math.floor(Date.now() / 1_000));
  return fc.record({ seconds: fc.bigInt({ min: now - 60n, max: now + 7_200n }), nanos: fc.integer({ min: 0, max: 999_999_999 }) });
}

function fieldArb(field: DescField, pools: Pools, plausible: boolean): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case 'scalar':
      switch (field.scalar) {
        case ScalarType.STRING: {
          const known = field.name === 'coupon_id' || (field.name === 'id' && field.parent.typeName === 'coupon.v1.Coupon') ? pools.couponIds : field.name === 'user_id' ? pools.userIds : field.name === 'order_id' ? pools.orderIds : undefined;
          if (known) return plausible ? fc.constantFrom(...known) : idArb(known);
          if (field.name === 'page_token') return plausible ? fc.constant('') : pageTokenArb();
          return plausible ? fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 20 }) : textArb();
        }
        case ScalarType.INT64: case ScalarType.SINT64: case ScalarType.SFIXED64: return plausible ? fc.bigInt({ min: 1n, max: 50n }) : int64Arb();
        case ScalarType.INT32: case ScalarType.SINT32: case ScalarType.SFIXED32: return plausible ? fc.integer({ min: 0, max: 100 }) : int32Arb();
        case ScalarType.BOOL: return fc.boolean();
        default: throw new Error(`fuzz: no arbitrary for scalar field ${field.toString()}; add one`);
      }
    case 'enum': return fc.integer({ min: -1, max: field.enum.values.length });
    case 'message':
      if (field.message.typeName === 'google.protobuf.Timestamp') return plausible ? nearNowArb() : timestampArb();
      return messageArb(field.message, pools, plausible);
    case 'list':
      // UpdateCoupon's update_mask.paths: the updatable fields, others, and garbage.
      if (field.listKind === 'scalar' && field.scalar === ScalarType.STRING) {
        return fc.array(plausible ? fc.constantFrom('name', 'total_quantity', 'closes_at', 'valid_until', 'discount_amount') : textArb(), { maxLength: 5 });
      }
      throw new Error(`fuzz: no arbitrary for repeated field ${field.toString()}; add one`);
    case 'map': throw new Error(`fuzz: no arbitrary for map field ${field.toString()}; add one`);
  }
}

/** Random messages of `desc`'s shape: every field may be left out. */
export function messageArb(desc: DescMessage, pools: Pools, plausible = false): fc.Arbitrary<MessageInitShape<DescMessage>> {
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) model[field.localName] = fieldArb(field, pools, plausible);
  return fc.record(model, { requiredKeys: [] });
}

export function encode(wire: Wire, desc: DescMessage, init: MessageInitShape<DescMessage>): Uint8Array {
  const message = create(desc, init);
  if (wire.encoding === 'proto') return toBinary(desc, message);
  try {
    return new TextEncoder().encode(toJsonString(desc, message));
  } catch {
    // A Timestamp outside 0001..9999 (or with nanos out of range) has no JSON form: send it as the
    // string a careless client might write.
    const reflected = reflect(desc, message);
    const odd: Record<string, string> = {};
    for (const field of desc.fields) {
      if (field.fieldKind !== 'message' || !reflected.isSet(field)) continue;
      const ts = reflected.get(field) as { message: { seconds?: bigint; nanos?: number } };
      odd[field.jsonName] = `${String(ts.message.seconds ?? 0n)}.${ts.message.nanos ?? 0}s`;
      reflected.clear(field);
    }
    const json = JSON.parse(toJsonString(desc, message)) as Record<string, unknown>;
    return new TextEncoder().encode(JSON.stringify({ ...json, ...odd }));
  }
}

type Mutation = { op: 'flip'; at: number; bit: number } | { op: 'truncate'; at: number } | { op: 'insert'; at: number; bytes: Uint8Array } | { op: 'delete'; at: number; length: number } | { op: 'duplicate' } | { op: 'set'; at: number; value: number };

const ratio = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('flip' as const), at: ratio, bit: fc.integer({ min: 0, max: 7 }) }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('truncate' as const), at: ratio }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('insert' as const), at: ratio, bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('delete' as const), at: ratio, length: fc.integer({ min: 1, max: 8 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('set' as const), at: ratio, value: fc.constantFrom(0x00, 0x22, 0x5c, 0x7b, 0x7d, 0x80, 0xff, 0x0a, 0x08, 0x12) }), weight: 1 },
  { arbitrary: fc.constant({ op: 'duplicate' as const }), weight: 1 },
);

function mutate(bytes: Uint8Array, mutations: Mutation[]): Uint8Array {
  let out = Uint8Array.from(bytes);
  for (const m of mutations) {
    const at = 'at' in m ? Math.floor(m.at * (out.length + (m.op === 'insert' ? 1 : 0))) : 0;
    switch (m.op) {
      case 'flip': if (out.length > 0) out[at] = out[at]! ^ (1 << m.bit); break;
      case 'set': if (out.length > 0) out[at] = m.value; break;
      case 'truncate': out = out.slice(0, at); break;
      case 'insert': out = Uint8Array.from([...out.subarray(0, at), ...m.bytes, ...out.subarray(at)]); break;
      case 'delete': out = Uint8Array.from([...out.subarray(0, at), ...out.subarray(at + m.length)]); break;
      case 'duplicate': out = Uint8Array.from([...out, ...out]); break;
    }
  }
  return out;
}

const describeMutations = (ms: Mutation[]) => ms.map((m) => m.op).join('+');

/** Bodies that lie about their frames (gRPC and gRPC-Web), or bodies at and over the size limit. */
function frameArb(wire: Wire, message: fc.Arbitrary<Uint8Array>, pools: Pools): fc.Arbitrary<{ how: string; payload: Uint8Array }> {
  const limit = pools.maxMessageBytes;
  const oversized = fc.integer({ min: limit + 1, max: limit + 4_096 }).map((n) => ({ how: 'oversized', payload: new Uint8Array(n).fill(0x0a) }));
  if (wire.protocol === 'connect') {
    return fc.oneof(
      oversized,
      fc.constant({ how: 'empty body', payload: new Uint8Array(0) }),
      fc.integer({ min: limit - 16, max: limit }).map((n) => ({ how: 'at the limit', payload: new Uint8Array(n).fill(0x20) })),
    );
  }
  return fc.oneof(
    fc.tuple(message, ratio).map(([m, at]) => { const f = envelope(m); return { how: 'frame cut short', payload: f.subarray(0, Math.floor(at * f.length)) }; }),
    fc.tuple(message, fc.integer({ min: 1, max: 1_000 })).map(([m, extra]) => ({ how: 'length longer than sent', payload: envelope(m, 0, m.length + extra) })),
    fc.tuple(message, fc.integer({ min: limit + 1, max: 2 ** 32 - 1 })).map(([m, declared]) => ({ how: 'declared oversized', payload: envelope(m, 0, declared) })),
    oversized.map(({ payload }) => ({ how: 'sent oversized', payload: envelope(payload) })),
    fc.constant({ how: 'no frame', payload: new Uint8Array(0) }),
    fc.array(message, { minLength: 2, maxLength: 3 }).map((ms) => ({ how: `${ms.length} frames`, payload: Uint8Array.from(ms.flatMap((m) => [...envelope(m)])) })),
    fc.tuple(message, fc.integer({ min: 1, max: 255 })).map(([m, flags]) => ({ how: `flags 0x${flags.toString(16)}`, payload: envelope(m, flags) })),
    fc.tuple(message, fc.uint8Array({ minLength: 1, maxLength: 9 })).map(([m, tail]) => ({ how: 'trailing bytes', payload: Uint8Array.from([...envelope(m), ...tail]) })),
  );
}

/** Any call of any CouponService RPC over any wire. */
export function callArb(pools: Pools): fc.Arbitrary<Call> {
  const methods = CouponService.methods.map((m) => m.name);
  return fc.record({ wire: fc.constantFrom(...WIRES), method: fc.constantFrom(...methods) }).chain(({ wire, method }) => {
    const desc = CouponService.methods.find((m) => m.name === method)!.input;
    const message = messageArb(desc, pools).map((init) => encode(wire, desc, init));
    const holdsBoth = desc.fields.some((f) => f.name === 'coupon_id') && desc.fields.some((f) => f.name === 'user_id');
    const plausibleInit = holdsBoth
      ? fc.tuple(messageArb(desc, pools, true), fc.option(fc.constantFrom(...pools.holdings), { freq: 3 }))
        .map(([init, held]) => (held ? { ...init, couponId: held[0], userId: held[1] } : init))
      : messageArb(desc, pools, true);
    const plausible = plausibleInit.map((init) => encode(wire, desc, init));
    const framed = wire.protocol !== 'connect';
    const base = { wire, method, headers: {} as Record<string, string> };
    return fc.oneof(
      { arbitrary: plausible.map((payload) => ({ ...base, kind: 'plausible' as const, how: 'as generated', payload, raw: false })), weight: 3 },
      { arbitrary: message.map((payload) => ({ ...base, kind: 'message' as const, how: 'as generated', payload, raw: false })), weight: 4 },
      { arbitrary: fc.tuple(message, fc.array(mutationArb, { minLength: 1, maxLength: 4 })).map(([m, ms]) => ({ ...base, kind: 'mutated' as const, how: describeMutations(ms), payload: mutate(m, ms), raw: false })), weight: 4 },
      { arbitrary: fc.uint8Array({ maxLength: 64 }).map((payload) => ({ ...base, kind: 'random-bytes' as const, how: 'random', payload, raw: false })), weight: 1 },
      { arbitrary: frameArb(wire, message, pools).map(({ how, payload }) => ({ ...base, kind: 'frame' as const, how, payload, raw: true })), weight: 2 },
      {
        arbitrary: fc.tuple(message, fc.boolean()).map(([m, corrupt]) => {
          const zipped = gzipSync(m);
          const middle = Math.floor(zipped.length / 2);
          if (corrupt) zipped[middle] = zipped[middle]! ^ 0xff;
          return {
            ...base, kind: 'compressed' as const, how: corrupt ? 'gzip, corrupted' : 'gzip',
            payload: framed ? envelope(zipped, 1) : zipped, raw: true,
            headers: { [framed ? 'grpc-encoding' : 'content-encoding']: 'gzip' },
          };
        }),
        weight: 1,
      },
    );
  });
}

export const describeCall = (c: Call) => `${c.method} over ${wireName(c.wire)}: ${c.kind} (${c.how}), ${c.payload.length} bytes${Object.keys(c.headers).length ? ` ${JSON.stringify(c.headers)}` : ''}: ${Buffer.from(c.payload.subarray(0, 96)).toString('hex')}${c.payload.length > 96 ? '…' : ''}`;
