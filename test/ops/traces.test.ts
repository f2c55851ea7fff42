// Traces: one IssueCoupon's trace, from the caller's traceparent through coupon-api's
// server span and the Kafka record's headers to the coupon-issuer batch that inserted it. The two
// services are real processes exporting OTLP/HTTP (JSON) to a small receiver this file runs, the
// way they would export to a collector; and with no OTLP endpoint, nothing is traced.
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Producer, ProducerBatch } from 'kafkajs';
import { BatchingPublisher } from '../../src/events/publisher.ts';
import { topicNames } from '../../src/events/topics.ts';
import { tracingRequested } from '../../src/telemetry/tracing.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { authHeader } from '../support/auth.ts';
import { kafka, readTopic, testLog, uniqueEnv, until } from '../support/stack.ts';

/** A span as an OTLP/JSON export carries it, with the service that sent it. */
interface ExportedSpan {
  service: string; traceId: string; spanId: string; parentSpanId: string; name: string; kind: number;
  attributes: Record<string, unknown>; links: { traceId: string; spanId: string }[];
}
// OTLP's SpanKind numbers.
const KIND = { SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 };

interface OtlpValue { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number }
interface OtlpAttribute { key: string; value: OtlpValue }
interface OtlpSpan { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; attributes?: OtlpAttribute[]; links?: { traceId: string; spanId: string }[] }
interface OtlpExport { resourceSpans?: { resource?: { attributes?: OtlpAttribute[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[] }

// OTLP/JSON ids are hex; accept base64 (protobuf's JSON mapping) too.
const hexId = (id: string | undefined) => (!id ? '' : /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex'));
const valueOf = (v: OtlpValue) => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue ?? v.doubleValue);
const attributes = (list: OtlpAttribute[] = []) => Object.fromEntries(list.map((a) => [a.key, valueOf(a.value)]));

/** An OTLP/HTTP receiver for JSON exports: POST /v1/traces. */
async function otlpReceiver() {
  const spans: ExportedSpan[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !req.headers['content-type']?.startsWith('application/json')) {
        res.writeHead(415).end();
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString()) as OtlpExport;
      for (const rs of body.resourceSpans ?? []) {
        const service = String(attributes(rs.resource?.attributes)['service.name']);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              service, name: s.name, kind: s.kind, traceId: hexId(s.traceId), spanId: hexId(s.spanId), parentSpanId: hexId(s.parentSpanId),
              attributes: attributes(s.attributes), links: (s.links ?? []).map((l) => ({ traceId: hexId(l.traceId), spanId: hexId(l.spanId) })),
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { spans, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }) };
}

const env = uniqueEnv('traces');
const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
const k = kafka();
let receiver: Awaited<ReturnType<typeof otlpReceiver>>;
let api: ServiceProcess;
let issuer: ServiceProcess;
let client: CouponClient;

beforeAll(async () => {
  receiver = await otlpReceiver();
  const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '100' };
  [api, issuer] = await Promise.all([startService('api', { ...env, ...otel }), startService('issuer', { ...env, ...otel })]);
  client = couponClient(api.address);
}, 60_000);
afterAll(async () => {
  client?.close();
  await Promise.all([api?.stop(), issuer?.stop()]);
  await receiver?.close();
});

describe('traces', () => {
  it("one IssueCoupon's trace reaches the issuer's INSERT: server span → record header → linked batch span → INSERT", async () => {
    const coupon = await createCoupon(client, 5);
    // The caller's own trace, as a W3C traceparent: the server span continues it.
    const callerTrace = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    await client.issueCoupon({ couponId: coupon.id, userId: 'traced-user' }, { metadata: { traceparent: `00-${callerTrace}-${callerSpan}-01` } });

    const server = await until('the IssueCoupon server span', () => Promise.resolve(receiver.spans.find((s) => s.name === 'coupon.v1.CouponService/IssueCoupon' && s.traceId === callerTrace)), 30_000);
    expect(server).toMatchObject({
      service: 'coupon-api', kind: KIND.SERVER, parentSpanId: callerSpan,
      attributes: { 'rpc.system': 'grpc', 'rpc.service': 'coupon.v1.CouponService', 'rpc.method': 'IssueCoupon', 'rpc.grpc.status_code': 0 },
    });

    // The record carries the trace in its headers: the PRODUCER span started when it was queued.
    const [record] = await readTopic(k, topics.issue, (key) => key === coupon.id);
    const [, headerTrace, headerSpan] = record!.headers.traceparent!.split('-');
    expect(headerTrace).toBe(callerTrace);
    const producer = await until('the producer span', () => Promise.resolve(receiver.spans.find((s) => s.spanId === headerSpan)), 30_000);
    expect(producer).toMatchObject({ service: 'coupon-api', kind: KIND.PRODUCER, name: `send ${topics.issue}`, parentSpanId: server.spanId, attributes: { 'messaging.system': 'kafka', 'messaging.destination.name': topics.issue } });

    // The issuer's batch span links to the record's context, and the INSERT ran inside it.
    const batch = await until('the issuer batch span', () => Promise.resolve(receiver.spans.find((s) => s.kind === KIND.CONSUMER && s.links.some((l) => l.traceId === callerTrace))), 30_000);
    expect(batch).toMatchObject({
      service: 'coupon-issuer', name: `process ${topics.issue}`,
      attributes: { 'messaging.system': 'kafka', 'messaging.destination.name': topics.issue, 'messaging.consumer.group.name': env.KAFKA_ISSUER_GROUP },
    });
    expect(batch.links).toContainEqual({ traceId: callerTrace, spanId: headerSpan });
    expect(batch.attributes['messaging.batch.message_count']).toBeGreaterThanOrEqual(1);
    const insert = await until('the INSERT span', () => Promise.resolve(receiver.spans.find((s) => s.name === 'INSERT user_coupons' && s.parentSpanId === batch.spanId)), 30_000);
    expect(insert).toMatchObject({ service: 'coupon-issuer', kind: KIND.CLIENT, traceId: batch.traceId, attributes: { 'db.system': 'postgresql', 'db.operation.name': 'INSERT', 'db.collection.name': 'user_coupons' } });
  }, 60_000);

  it('a Connect call is traced as connect_rpc, with its error code', async () => {
    const res = await fetch(`${api.url}/coupon.v1.CouponService/GetCoupon`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(await authHeader('operator')) },
      body: JSON.stringify({ couponId: '00000000-0000-4000-8000-00000000dead' }),
    });
    expect(res.status).toBe(404);
    const span = await until('the GetCoupon server span', () => Promise.resolve(receiver.spans.find((s) => s.name === 'coupon.v1.CouponService/GetCoupon' && s.attributes['rpc.system'] === 'connect_rpc')), 30_000);
    expect(span).toMatchObject({ kind: KIND.SERVER, attributes: { 'rpc.service': 'coupon.v1.CouponService', 'rpc.method': 'GetCoupon', 'rpc.connect_rpc.error_code': 'not_found' } });
  }, 30_000);

  it('without an OTLP endpoint nothing is traced: records go out with the headers they had', async () => {
    expect(tracingRequested({})).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' })).toBe(false);
    // This test process starts no SDK, like a service without OTEL_EXPORTER_OTLP_ENDPOINT.
    const sent: ProducerBatch[] = [];
    const producer = { connect: () => Promise.resolve(), disconnect: () => Promise.resolve(), sendBatch: (b: ProducerBatch) => { sent.push(b); return Promise.resolve([]); } } as unknown as Producer;
    const publisher = new BatchingPublisher(() => producer, { lingerMs: 1, maxBatch: 10, timeoutMs: 1_000 }, testLog);
    await publisher.connect();
    await publisher.send('t', { key: 'k', value: 'v', headers: { mine: 'x' } });
    expect(sent[0]!.topicMessages![0]!.messages[0]!.headers).toEqual({ mine: 'x' });
  });
});
