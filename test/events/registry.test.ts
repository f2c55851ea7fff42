// Registration and decoding against the real Apicurio Registry (its Confluent-compatible API).
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { create, equals } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { CouponRefSchema, PaymentResultSchema, PaymentStatus } from '../../gen/payment/v1/payment_pb.js';
import { loadConfig } from '../../src/config.ts';
import {
  EventDecodeError,
  EventRegistry,
  SchemaRegistryError,
  type Compatibility,
  type EventCodec,
  type EventDecodeReason,
  type EventDecoder,
} from '../../src/events/registry.ts';
import { encodeFrame } from '../../src/events/wire-format.ts';
import { registrySubjects } from '../support/stack.ts';

const REGISTRY_URL = loadConfig().SCHEMA_REGISTRY_URL;
const ISSUE_PROTO = readFileSync(new URL('../../proto/coupon/events/v1/issue.proto', import.meta.url), 'utf8');
const UNKNOWN_ID = 2_000_000_000; // Apicurio numbers schemas from 1 up

const registrySubjectsOfFile = registrySubjects(REGISTRY_URL);
const uniqueTopic = (name: string) => registrySubjectsOfFile.uniqueTopic(`test.events.${name}`);

afterAll(() => registrySubjectsOfFile.cleanup());

async function getJson(path: string): Promise<unknown> {
  const res = await fetch(`${REGISTRY_URL}${path}`);
  expect(res.status, `GET ${path}`).toBe(200);
  return res.json();
}

function payment() {
  return create(PaymentResultSchema, {
    orderId: `order-${randomUUID()}`,
    coupons: [{ couponId: 'c-1', userId: 'u-1' }, { couponId: 'c-2', userId: 'u-1' }],
    status: PaymentStatus.FAILED,
    occurredAt: timestampFromDate(new Date('2026-01-02T03:04:05.678Z')),
  });
}

async function decodeReason(decoder: EventDecoder<typeof PaymentResultSchema>, bytes: Uint8Array): Promise<EventDecodeReason> {
  const err: unknown = await decoder.decode(bytes).then(
    () => new Error('decoded a poison value'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EventDecodeError);
  return (err as EventDecodeError).reason;
}

/** A pass-through proxy in front of the registry that records requests and can fail or hang. */
async function registryProxy(): Promise<{ url: string; requests: string[]; down: { value: boolean }; hang: { value: boolean }; close(): Promise<void> }> {
  const upstream = new URL(REGISTRY_URL);
  const requests: string[] = [];
  const down = { value: false };
  const hang = { value: false };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push(`${req.method} ${req.url}`);
      if (hang.value) return;
      if (down.value) {
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"message":"down for the test","error_code":50301}');
        return;
      }
      const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
      fetch(new URL(req.url ?? '/', upstream.origin), { method: req.method, headers: { 'content-type': req.headers['content-type'] ?? 'application/json' }, body })
        .then(async (answer) => {
          res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
          res.end(Buffer.from(await answer.arrayBuffer()));
        })
        .catch(() => res.writeHead(502).end());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${upstream.pathname}`,
    requests,
    down,
    hang,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe("registering a producer's schema (forTopic)", () => {
  it.each<Compatibility>(['BACKWARD', 'BACKWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE'])(
    'sets %s on <topic>-value and stores the .proto file as readable text',
    async (compatibility) => {
      const topic = uniqueTopic('issue');
      const codec = await new EventRegistry({ url: REGISTRY_URL, compatibility }).forTopic(topic, CouponIssueRequestedSchema);

      expect(codec.subject).toBe(`${topic}-value`);
      expect(await getJson(`/config/${codec.subject}`)).toEqual({ compatibilityLevel: compatibility });
      const latest = (await getJson(`/subjects/${codec.subject}/versions/latest`)) as Record<string, unknown>;
      expect(latest).toMatchObject({ subject: codec.subject, version: 1, id: codec.schemaId, schemaType: 'PROTOBUF', schema: ISSUE_PROTO });
      expect(await getJson('/subjects')).toContain(codec.subject);
    },
  );

  it('gives a restarted producer the same id without adding a version', async () => {
    const topic = uniqueTopic('restart');
    const first = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(topic, PaymentResultSchema);
    const second = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(topic, PaymentResultSchema);
    expect(second.schemaId).toBe(first.schemaId);
    expect(await getJson(`/subjects/${first.subject}/versions`)).toEqual([1]);
  });

  it('puts back the configured level when someone changed it', async () => {
    const topic = uniqueTopic('level');
    const registry = new EventRegistry({ url: REGISTRY_URL, compatibility: 'FULL_TRANSITIVE' });
    const codec = await registry.forTopic(topic, PaymentResultSchema);
    const lowered = await fetch(`${REGISTRY_URL}/config/${codec.subject}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/vnd.schemaregistry.v1+json' },
      body: JSON.stringify({ compatibility: 'NONE' }),
    });
    expect(lowered.status).toBe(200);
    await registry.forTopic(topic, PaymentResultSchema);
    expect(await getJson(`/config/${codec.subject}`)).toEqual({ compatibilityLevel: 'FULL_TRANSITIVE' });
  });

  it('refuses to start with a SchemaRegistryError when the registry is unreachable', async () => {
    const registry = new EventRegistry({ url: 'http://127.0.0.1:1/apis/ccompat/v7', compatibility: 'BACKWARD' });
    await expect(registry.forTopic('test.events.unreachable', PaymentResultSchema)).rejects.toBeInstanceOf(SchemaRegistryError);
  });

  it('gives up on a registry that accepts the request but never answers', async () => {
    const proxy = await registryProxy();
    try {
      proxy.hang.value = true;
      const registry = new EventRegistry({ url: proxy.url, compatibility: 'BACKWARD', requestTimeoutMs: 300 });
      const started = Date.now();
      const err: unknown = await registry.forTopic(uniqueTopic('hung'), PaymentResultSchema).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SchemaRegistryError);
      expect((err as Error).message).toMatch(/Timeout \(300ms\)/);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await proxy.close();
    }
  });
});

describe('encoding and decoding values', () => {
  it('writes the registered id and the message indexes, and reads the value back', async () => {
    const codec = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(uniqueTopic('payment'), PaymentResultSchema);
    const message = payment();
    const bytes = codec.encode(message);

    expect(bytes[0]).toBe(0);
    expect(bytes.readUInt32BE(1)).toBe(codec.schemaId);
    expect([...bytes.subarray(5, 7)]).toEqual([2, 2]); // [1]: PaymentResult is the second message in payment.proto
    expect(codec.messageIndexes).toEqual([1]);
    expect(equals(PaymentResultSchema, await codec.decode(bytes), message)).toBe(true);
  });

  it("lets a consumer that registers nothing read a producer's values, fetching the writer schema once", async () => {
    const codec = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(uniqueTopic('consumer'), PaymentResultSchema);
    const proxy = await registryProxy();
    try {
      const decoder = new EventRegistry({ url: proxy.url, compatibility: 'BACKWARD' }).decoderFor(PaymentResultSchema);
      const messages = Array.from({ length: 10 }, payment);
      const concurrent = await Promise.all(messages.slice(0, 5).map((m) => decoder.decode(codec.encode(m))));
      const sequential = [];
      for (const m of messages.slice(5)) sequential.push(await decoder.decode(codec.encode(m)));

      [...concurrent, ...sequential].forEach((decoded, i) => expect(equals(PaymentResultSchema, decoded, messages[i]!)).toBe(true));
      expect(proxy.requests).toEqual([`GET ${new URL(proxy.url).pathname}/schemas/ids/${codec.schemaId}`]);
    } finally {
      await proxy.close();
    }
  });

  it('refuses to encode a message of another type', async () => {
    const codec = await new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' }).forTopic(uniqueTopic('mistyped'), PaymentResultSchema);
    expect(() => codec.encode(create(CouponRefSchema) as never)).toThrow(TypeError);
  });
});

describe('poison values give a typed EventDecodeError, never a crash', () => {
  const registry = new EventRegistry({ url: REGISTRY_URL, compatibility: 'BACKWARD' });
  const decoder = registry.decoderFor(PaymentResultSchema);
  let codec: EventCodec<typeof PaymentResultSchema>;
  beforeAll(async () => {
    codec = await registry.forTopic(uniqueTopic('poison'), PaymentResultSchema);
  });

  it('a wrong magic byte: BAD_MAGIC', async () => {
    const bytes = codec.encode(payment());
    bytes[0] = 1;
    expect(await decodeReason(decoder, bytes)).toBe('BAD_MAGIC');
  });

  it('truncated bytes: TRUNCATED inside the header, BAD_PAYLOAD inside the payload', async () => {
    const bytes = codec.encode(payment());
    expect(await decodeReason(decoder, bytes.subarray(0, 3))).toBe('TRUNCATED');
    expect(await decodeReason(decoder, bytes.subarray(0, 5))).toBe('TRUNCATED');
    expect(await decodeReason(decoder, bytes.subarray(0, bytes.length - 3))).toBe('BAD_PAYLOAD');
  });

  it('a payload that does not parse: BAD_PAYLOAD', async () => {
    const { schemaId } = codec;
    expect(await decodeReason(decoder, encodeFrame(schemaId, [1], Uint8Array.from([0x0a, 0x05, 0x61])))).toBe('BAD_PAYLOAD'); // 5 bytes promised, 1 given
    expect(await decodeReason(decoder, encodeFrame(schemaId, [1], Uint8Array.from([0x0f, 0x01])))).toBe('BAD_PAYLOAD'); // wire type 7
  });

  it('an unknown schema id: UNKNOWN_SCHEMA_ID, looked up once', async () => {
    const proxy = await registryProxy();
    try {
      const fresh = new EventRegistry({ url: proxy.url, compatibility: 'BACKWARD' }).decoderFor(PaymentResultSchema);
      const bytes = encodeFrame(UNKNOWN_ID, [1], Uint8Array.from([0x0a, 0x01, 0x61]));
      for (let i = 0; i < 3; i++) expect(await decodeReason(fresh, bytes)).toBe('UNKNOWN_SCHEMA_ID');
      expect(proxy.requests).toEqual([`GET ${new URL(proxy.url).pathname}/schemas/ids/${UNKNOWN_ID}`]);
    } finally {
      await proxy.close();
    }
  });

  it('another message type: WRONG_MESSAGE_TYPE; indexes naming no message: BAD_MESSAGE_INDEXES', async () => {
    const { schemaId } = codec;
    const issue = await registry.forTopic(uniqueTopic('other-type'), CouponIssueRequestedSchema);
    const issueBytes = issue.encode(create(CouponIssueRequestedSchema, { couponId: 'c-1', userId: 'u-1', seq: 1n }));
    expect(await decodeReason(decoder, issueBytes)).toBe('WRONG_MESSAGE_TYPE');
    // CouponRef shares payment.proto with PaymentResult: the same schema id, another index.
    const couponRef = encodeFrame(schemaId, [0], Uint8Array.from([0x0a, 0x01, 0x61]));
    expect(await decodeReason(decoder, couponRef)).toBe('WRONG_MESSAGE_TYPE');
    expect(await decodeReason(decoder, encodeFrame(schemaId, [7], new Uint8Array()))).toBe('BAD_MESSAGE_INDEXES');
    expect(await decodeReason(decoder, encodeFrame(schemaId, [1, 0], new Uint8Array()))).toBe('BAD_MESSAGE_INDEXES');
  });

  it('a registry outage is a SchemaRegistryError, not a poison record, and is asked again next time', async () => {
    const { schemaId } = codec;
    const bytes = codec.encode(payment());
    const proxy = await registryProxy();
    try {
      const fresh = new EventRegistry({ url: proxy.url, compatibility: 'BACKWARD' }).decoderFor(PaymentResultSchema);
      proxy.down.value = true;
      const err: unknown = await fresh.decode(bytes).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SchemaRegistryError);
      expect(err).not.toBeInstanceOf(EventDecodeError);
      expect((err as SchemaRegistryError).status).toBe(503);

      proxy.down.value = false;
      expect((await fresh.decode(bytes)).$typeName).toBe('payment.v1.PaymentResult');
      expect(proxy.requests.filter((r) => r.endsWith(`/schemas/ids/${schemaId}`)).length).toBeGreaterThan(1);
    } finally {
      await proxy.close();
    }
  });
});
