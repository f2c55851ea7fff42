// The Confluent framing on its own: pure functions, no registry, no broker.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createFileRegistry, fromBinary, toBinary, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { CouponRefSchema, PaymentResultSchema } from '../../gen/payment/v1/payment_pb.js';
import { EventDecodeError, type EventDecodeReason } from '../../src/events/errors.ts';
import { decodeFrame, encodeFrame, messageIndexesOf, outlineOf, typeNameAt } from '../../src/events/wire-format.ts';

const BUF = fileURLToPath(new URL('../../node_modules/.bin/buf', import.meta.url));
const OUTLINE_FIXTURE = fileURLToPath(new URL('../fixtures/outline/', import.meta.url));

const payload = Uint8Array.from([0x0a, 0x02, 0x6f, 0x31]); // field 1 = "o1"

function decodeError(bytes: Uint8Array): EventDecodeError {
  try {
    decodeFrame(bytes);
  } catch (err) {
    if (err instanceof EventDecodeError) return err;
    throw err;
  }
  throw new Error('decodeFrame accepted a malformed frame');
}

function expectReason(bytes: number[], reason: EventDecodeReason): void {
  expect(decodeError(Uint8Array.from(bytes)).reason).toBe(reason);
}

describe('encodeFrame', () => {
  it('writes magic 0, the big-endian schema id, then the single byte 0 for the first message in a file', () => {
    expect([...encodeFrame(0x01020304, [0], payload)]).toEqual([0, 1, 2, 3, 4, 0, ...payload]);
  });

  it('writes [1] as a zig-zag count of 1 and a zig-zag index of 1', () => {
    expect([...encodeFrame(7, [1], payload)]).toEqual([0, 0, 0, 0, 7, 2, 2, ...payload]);
  });

  it('writes the nested path [1, 0] in full: count 2, then 1, then 0', () => {
    expect([...encodeFrame(7, [1, 0], payload)]).toEqual([0, 0, 0, 0, 7, 4, 2, 0, ...payload]);
  });

  it('writes indexes of 64 and more as multi-byte varints', () => {
    // 200 zig-zags to 400 = 0b11_0010000: low seven bits with the continuation bit, then 3.
    expect([...encodeFrame(7, [200], payload)]).toEqual([0, 0, 0, 0, 7, 2, 0x90, 0x03, ...payload]);
  });

  it('refuses ids and indexes no reader could decode', () => {
    expect(() => encodeFrame(-1, [0], payload)).toThrow(RangeError);
    expect(() => encodeFrame(2 ** 31, [0], payload)).toThrow(RangeError);
    expect(() => encodeFrame(1, [], payload)).toThrow(RangeError);
    expect(() => encodeFrame(1, [0, -1], payload)).toThrow(RangeError);
    expect(() => encodeFrame(1, [1.5], payload)).toThrow(RangeError);
  });
});

describe('decodeFrame', () => {
  it.each([
    { schemaId: 1, messageIndexes: [0] },
    { schemaId: 7, messageIndexes: [1] },
    { schemaId: 42, messageIndexes: [1, 0] },
    { schemaId: 2 ** 31 - 1, messageIndexes: [3, 200, 0, 70_000] },
  ])('reads back what encodeFrame wrote: id $schemaId, indexes $messageIndexes', ({ schemaId, messageIndexes }) => {
    for (const body of [payload, new Uint8Array()]) {
      const frame = decodeFrame(encodeFrame(schemaId, messageIndexes, body));
      expect({ ...frame, payload: [...frame.payload] }).toEqual({ schemaId, messageIndexes, payload: [...body] });
    }
  });

  it('reads a count of 0 as the shortcut for [0]', () => {
    expect(decodeFrame(Uint8Array.from([0, 0, 0, 0, 9, 0, ...payload]))).toEqual({ schemaId: 9, messageIndexes: [0], payload });
    expect(decodeFrame(Uint8Array.from([0, 0, 0, 0, 9, 0]))).toEqual({ schemaId: 9, messageIndexes: [0], payload: new Uint8Array() });
  });

  it('reads a frame in the middle of a larger buffer', () => {
    const framed = encodeFrame(5, [1], payload);
    const larger = new Uint8Array(framed.length + 10);
    larger.set(framed, 3);
    larger[3 + framed.length] = 0xff; // bytes beyond the view must not leak into the payload
    expect(decodeFrame(larger.subarray(3, 3 + framed.length))).toEqual({ schemaId: 5, messageIndexes: [1], payload });
  });

  it('rejects a wrong magic byte with BAD_MAGIC', () => {
    expectReason([1, 0, 0, 0, 7, 0, ...payload], 'BAD_MAGIC');
    // A plain Protobuf payload, written without the framing, starts with a field tag.
    expectReason([...payload], 'BAD_MAGIC');
  });

  it('rejects values cut off inside the header with TRUNCATED', () => {
    expectReason([], 'TRUNCATED');
    expectReason([0], 'TRUNCATED');
    expectReason([0, 0, 0, 7], 'TRUNCATED');
    expectReason([0, 0, 0, 0, 7], 'TRUNCATED'); // no message-index array
    expectReason([0, 0, 0, 0, 7, 4, 2], 'TRUNCATED'); // count 2, one index
    expectReason([0, 0, 0, 0, 7, 2, 0x90], 'TRUNCATED'); // inside a varint
  });

  it('rejects malformed message indexes with BAD_MESSAGE_INDEXES', () => {
    expectReason([0, 0, 0, 0, 7, 1, 0], 'BAD_MESSAGE_INDEXES'); // count -1
    expectReason([0, 0, 0, 0, 7, 2, 1], 'BAD_MESSAGE_INDEXES'); // index -1
    expectReason([0, 0, 0, 0, 7, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 'BAD_MESSAGE_INDEXES'); // over 32 bits
  });

  it('carries the schema id on errors found after the header', () => {
    expect(decodeError(Uint8Array.from([0, 0, 0, 1, 2, 1])).schemaId).toBe(258);
  });
});

describe('messageIndexesOf', () => {
  it('gives the path of a generated message inside its .proto file', () => {
    expect(messageIndexesOf(CouponIssueRequestedSchema)).toEqual([0]);
    expect(messageIndexesOf(CouponRefSchema)).toEqual([0]);
    expect(messageIndexesOf(PaymentResultSchema)).toEqual([1]);
  });
});

describe('outlineOf and typeNameAt', () => {
  // Compile the fixture with buf, the real compiler, and check our small scanner of the .proto text
  // agrees with it on every message, nested, grouped and declared after maps and decoys.
  const text = readFileSync(`${OUTLINE_FIXTURE}/nesting.proto`, 'utf8');
  const set = fromBinary(FileDescriptorSetSchema, execFileSync(BUF, ['build', OUTLINE_FIXTURE, '-o', '-#format=binpb']));
  const file = createFileRegistry(set).getFile('nesting.proto');
  if (file === undefined) throw new Error('buf did not compile nesting.proto');
  const allMessages = (messages: DescMessage[]): DescMessage[] => messages.flatMap((m) => [m, ...allMessages(m.nestedMessages)]);
  const messages = allMessages(file.messages);

  it('finds the messages the compiler finds, at the same indexes', () => {
    expect(messages.map((m) => [m.typeName, messageIndexesOf(m)])).toEqual([
      ['fixture.outline.Rule', [0]],
      ['fixture.outline.Outer', [1]],
      ['fixture.outline.Outer.First', [1, 0]],
      ['fixture.outline.Outer.First.Deep', [1, 0, 0]],
      ['fixture.outline.Outer.Grouped', [1, 1]],
      ['fixture.outline.Outer.Second', [1, 2]],
      ['fixture.outline.Outer.Third', [1, 3]],
      ['fixture.outline.Extra', [2]],
      ['fixture.outline.Last', [3]],
    ]);
    const outline = outlineOf(text);
    for (const message of messages) expect(typeNameAt(outline, messageIndexesOf(message))).toBe(message.typeName);
  });

  it('reads a schema registered as a base64 FileDescriptorProto, as Confluent JS, Go, Python and .NET clients register it', () => {
    const base64 = Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)).toString('base64');
    const outline = outlineOf(base64);
    for (const message of messages) expect(typeNameAt(outline, messageIndexesOf(message))).toBe(message.typeName);
  });

  it('answers undefined for indexes that name no message', () => {
    const outline = outlineOf(text);
    expect(typeNameAt(outline, [4])).toBeUndefined();
    expect(typeNameAt(outline, [1, 4])).toBeUndefined();
    expect(typeNameAt(outline, [0, 0])).toBeUndefined();
    expect(typeNameAt(outlineOf('not a schema'), [0])).toBeUndefined();
  });

  it('reads a file without a package', () => {
    expect(typeNameAt(outlineOf('syntax = "proto3"; message A { message B {} }'), [0, 0])).toBe('A.B');
  });
});
