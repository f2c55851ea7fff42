// Interop with an independent implementation of the wire format: Confluent's official JS serde
// (@confluentinc/schemaregistry), pointed at the same Apicurio Registry. payment.v1.PaymentResult is
// the second message in its file, so its message indexes ([1]) are actually on the wire.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { create, createMutableRegistry, equals, fromBinary, toBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  ProtobufDeserializer,
  ProtobufSerializer,
  SchemaRegistryClient,
  SerdeType,
  SubjectNameStrategyType,
  type SchemaInfo,
} from '@confluentinc/schemaregistry';
import { afterAll, describe, expect, it } from 'vitest';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { PaymentResultSchema, PaymentStatus } from '../../gen/payment/v1/payment_pb.js';
import { loadConfig } from '../../src/config.ts';
import { EventRegistry } from '../../src/events/registry.ts';

const REGISTRY_URL = loadConfig().SCHEMA_REGISTRY_URL;
const BUF = fileURLToPath(new URL('../../node_modules/.bin/buf', import.meta.url));

/**
 * Confluent's deserializer fetches the writer schema with `?format=serialized`, which Confluent
 * Schema Registry answers with a base64 FileDescriptorProto compiled from the stored .proto text.
 * Apicurio 3.3.3 cannot: it answers with the raw descriptor bytes as a JSON string, mangling every
 * byte that is not valid UTF-8, or with a parse error (see the last test below). This client does
 * that one conversion the way the registry would, compiling the stored text with buf, and leaves
 * everything else (framing, indexes, payload) to Confluent's own code.
 */
class ServesSerializedProtobuf extends SchemaRegistryClient {
  override async getBySubjectAndId(subject: string, id: number, format?: string): Promise<SchemaInfo> {
    const stored = await super.getBySubjectAndId(subject, id);
    if (format !== 'serialized' || stored.schemaType !== 'PROTOBUF') return stored;
    return { ...stored, schema: compileToBase64Descriptor(stored.schema, `schema_${id}.proto`) };
  }
}

function compileToBase64Descriptor(text: string, fileName: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'events-interop-'));
  try {
    writeFileSync(join(dir, fileName), text);
    const set = fromBinary(FileDescriptorSetSchema, execFileSync(BUF, ['build', dir, '--exclude-imports', '-o', '-#format=binpb']));
    const file = set.file.find((f) => f.name === fileName);
    if (file === undefined) throw new Error(`buf did not compile ${fileName}`);
    return Buffer.from(toBinary(FileDescriptorProtoSchema, file)).toString('base64');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Confluent's serde defaults to its ASSOCIATED strategy, which first asks the registry's
// /associations API (Confluent-only; Apicurio answers 404, and now and then never finishes the
// response) and then falls back to TopicNameStrategy. Ask for TopicNameStrategy directly: it is what
// the project uses.
const TOPIC_NAMES = { subjectNameStrategyType: SubjectNameStrategyType.TOPIC };

const subjects: string[] = [];
const clients: SchemaRegistryClient[] = [];
const uniqueTopic = (name: string) => {
  const topic = `test.events.interop.${name}.${randomUUID().slice(0, 8)}`;
  subjects.push(`${topic}-value`);
  return topic;
};
const confluentClient = (Client: typeof SchemaRegistryClient = SchemaRegistryClient) => {
  // A timeout, so a stalled registry fails the test with its own error, not vitest's.
  const client = new Client({ baseURLs: [REGISTRY_URL], createAxiosDefaults: { timeout: 10_000 } });
  clients.push(client);
  return client;
};

afterAll(async () => {
  for (const client of clients) await client.close();
  for (const subject of subjects) {
    await fetch(`${REGISTRY_URL}/subjects/${subject}`, { method: 'DELETE' });
    await fetch(`${REGISTRY_URL}/subjects/${subject}?permanent=true`, { method: 'DELETE' });
  }
});

const paymentResult = () =>
  create(PaymentResultSchema, {
    orderId: `order-${randomUUID()}`,
    coupons: [{ couponId: 'c-1', userId: 'u-1' }],
    status: PaymentStatus.SUCCEEDED,
    occurredAt: timestampFromDate(new Date('2026-03-04T05:06:07.089Z')),
  });
const issueRequested = () =>
  create(CouponIssueRequestedSchema, {
    couponId: 'c-1',
    userId: `u-${randomUUID()}`,
    seq: 42n,
    requestedAt: timestampFromDate(new Date('2026-03-04T05:06:07.089Z')),
    totalQuantity: 100n,
  });

const cases = [
  { name: 'payment.v1.PaymentResult, message [1]', schema: PaymentResultSchema as DescMessage, make: paymentResult as () => MessageShape<DescMessage>, indexBytes: [2, 2] },
  { name: 'coupon.events.v1.CouponIssueRequested, message [0]', schema: CouponIssueRequestedSchema, make: issueRequested, indexBytes: [0] },
];

describe("Confluent's serializer and the project's encoder", () => {
  it.each(cases)('write the same bytes for $name', async ({ schema, make, indexBytes }) => {
    const topic = uniqueTopic('same-bytes');
    const codec = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(topic, schema);
    // Against Apicurio a Confluent producer must use the registered version (useLatestVersion): its
    // lookup by schema sends a base64 descriptor, which Apicurio compares with the stored text.
    const serializer = new ProtobufSerializer(confluentClient(), SerdeType.VALUE, {
      ...TOPIC_NAMES,
      autoRegisterSchemas: false,
      useLatestVersion: true,
      registry: createMutableRegistry(schema.file),
    });
    const message = make();

    const theirs = await serializer.serialize(topic, message);
    const ours = codec.encode(message);

    expect(ours.toString('hex')).toBe(theirs.toString('hex'));
    expect([...theirs.subarray(5, 5 + indexBytes.length)]).toEqual(indexBytes);
    expect(equals(schema, await codec.decode(theirs), message)).toBe(true);
  });

  it("the project reads values whose schema Confluent's serializer registered itself", async () => {
    const topic = uniqueTopic('auto-registered');
    const serializer = new ProtobufSerializer(confluentClient(), SerdeType.VALUE, {
      ...TOPIC_NAMES,
      autoRegisterSchemas: true,
      registry: createMutableRegistry(PaymentResultSchema.file),
    });
    const message = paymentResult();

    const theirs = await serializer.serialize(topic, message);

    // Confluent's JS client registers a base64 FileDescriptorProto; Apicurio stores it as it came.
    const stored = (await (await fetch(`${REGISTRY_URL}/subjects/${topic}-value/versions/latest`)).json()) as { id: number; schema: string };
    expect(stored.schema).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(theirs.readUInt32BE(1)).toBe(stored.id);
    const decoder = new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).decoderFor(PaymentResultSchema);
    expect(equals(PaymentResultSchema, await decoder.decode(theirs), message)).toBe(true);
  });
});

describe("Confluent's deserializer", () => {
  it.each(cases)("reads the project's bytes for $name", async ({ schema, make }) => {
    const topic = uniqueTopic('deserialize');
    const codec = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(topic, schema);
    const deserializer = new ProtobufDeserializer(confluentClient(ServesSerializedProtobuf), SerdeType.VALUE, TOPIC_NAMES);
    const message = make();

    const theirs = (await deserializer.deserialize(topic, codec.encode(message))) as MessageShape<DescMessage>;

    expect(theirs.$typeName).toBe(schema.typeName);
    expect(equals(schema, theirs, message)).toBe(true);
  });

  it('cannot fetch a Protobuf schema from Apicurio 3.3.3 on its own (why the client above exists)', async () => {
    const topic = uniqueTopic('apicurio-serialized');
    const codec = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(topic, PaymentResultSchema);
    const deserializer = new ProtobufDeserializer(confluentClient(), SerdeType.VALUE, TOPIC_NAMES);

    const raw = (await (await fetch(`${REGISTRY_URL}/schemas/ids/${codec.schemaId}?format=serialized`)).json()) as { schema: string };
    expect(raw.schema).toContain('PaymentResult'); // descriptor bytes as text, not base64
    expect(raw.schema).toContain('\ufffd'); // and lossy: bytes that are not UTF-8 are replaced
    // If this starts passing, Apicurio serves ?format=serialized: drop ServesSerializedProtobuf.
    await expect(deserializer.deserialize(topic, codec.encode(paymentResult()))).rejects.toThrow();
  });
});
