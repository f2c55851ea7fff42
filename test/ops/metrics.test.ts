// A small sale against the real coupon-api and coupon-issuer, then their /metrics read over HTTP
// as Prometheus would: every number must match what happened.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { Health } from '../../gen/health/v1/health_pb.js';
import { CouponStatus } from '../../gen/coupon/v1/coupon_pb.js';
import { topicNames } from '../../src/events/topics.ts';
import { redemptionGroups } from '../../src/redemption/wiring.ts';
import { replayGroupId } from '../../src/events/replay.ts';
import { parseMetrics, scrape, sumOf, type Sample } from '../../src/metrics/text-format.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { run, startService, type ServiceProcess } from '../support/processes.ts';
import { config, db, kafka, uniqueEnv, until } from '../support/stack.ts';

const QUANTITY = 5;
const CALLERS = 8;
const issueCoupon = { grpc_type: 'unary', grpc_service: 'coupon.v1.CouponService', grpc_method: 'IssueCoupon' };

describe('Prometheus metrics of coupon-api and coupon-issuer', () => {
  const env = uniqueEnv('metrics');
  const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
  const store = db();
  let api: ServiceProcess;
  let issuer: ServiceProcess;
  let client: CouponClient;
  let couponId: string;
  let apiText: string;
  let issuerText: string;

  beforeAll(async () => {
    [issuer, api] = await Promise.all([startService('issuer', env), startService('api', env)]);
    client = couponClient(api.address);
  });
  afterAll(async () => {
    client?.close();
    await Promise.all([api?.stop(), issuer?.stop()]);
    await store.destroy();
  });

  it('serve both endpoints on ports of their own, named in the ready log lines', () => {
    for (const p of [api, issuer]) expect(p.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*\/metrics$/);
    expect(api.metricsUrl).not.toBe(issuer.metricsUrl);
  });

  it('count a sale: gate decisions, gRPC calls by code, rows issued, lag drained, dependencies up', async () => {
    const coupon = await createCoupon(client, QUANTITY);
    couponId = coupon.id;
    const later = await createCoupon(client, 1, { opensInMs: 3_600_000 });

    // Eight callers for five units, then a winner asks again, one asks too early, one has no token.
    const results = await Promise.allSettled(Array.from({ length: CALLERS }, (_, i) => client.issueCoupon({ couponId, userId: `user-${i}` })));
    const winners = results.map((r, i) => (r.status === 'fulfilled' ? `user-${i}` : undefined)).filter((u) => u !== undefined);
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r.reason as { code: number }).code);
    expect(winners).toHaveLength(QUANTITY);
    expect(refused).toEqual(Array(CALLERS - QUANTITY).fill(grpc.status.RESOURCE_EXHAUSTED));
    await client.issueCoupon({ couponId, userId: winners[0]! });
    expect((await callError(client.issueCoupon({ couponId: later.id, userId: 'early' }))).code).toBe(grpc.status.FAILED_PRECONDITION);
    const anonymous = await fetch(`${api.url}/coupon.v1.CouponService/IssueCoupon`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ couponId, userId: 'nobody' }),
    });
    expect(anonymous.status).toBe(401);

    // A record no registry wrote goes to the dead-letter topic.
    const producer = kafka().producer();
    await producer.connect();
    await producer.send({ topic: topics.issue, messages: [{ key: randomUUID(), value: Buffer.from('not a registry-framed record') }] });
    await producer.disconnect();

    await until('the coupon to be COMPLETE', async () => (await client.getCoupon({ couponId })).coupon?.status === CouponStatus.COMPLETE);
    const [row] = await store('user_coupons').where({ coupon_id: couponId }).count<{ count: string }[]>('* as count');
    const rows = Number(row?.count);
    expect(rows).toBe(QUANTITY);

    // The issuer's lag is read from the broker at each scrape: wait for the drain to be committed.
    let issuerSamples: Sample[] = [];
    await until('the issuer to report its lag drained and the dead letter counted', async () => {
      issuerText = await (await fetch(issuer.metricsUrl)).text();
      issuerSamples = parseMetrics(issuerText);
      const lag = issuerSamples.filter((s) => s.name === 'kafka_consumergroup_lag' && s.labels.consumergroup === env.KAFKA_ISSUER_GROUP && s.labels.topic === topics.issue);
      return lag.length === config.KAFKA_TOPIC_PARTITIONS && lag.every((s) => s.value === 0) && sumOf(issuerSamples, 'coupon_dead_lettered_records_total') === 1;
    }, 30_000, 500);

    apiText = await (await fetch(api.metricsUrl)).text();
    const apiSamples = parseMetrics(apiText);

    const decisions = (outcome: string) => sumOf(apiSamples, 'coupon_gate_decisions_total', { outcome });
    expect(decisions('won')).toBe(winners.length);
    expect(decisions('sold_out')).toBe(refused.length);
    expect(decisions('repeat')).toBe(1);
    expect(decisions('not_open')).toBe(1);
    expect(decisions('closed')).toBe(0);
    expect(decisions('publish_failed')).toBe(0);

    const handled = (grpc_code: string) => sumOf(apiSamples, 'grpc_server_handled_total', { ...issueCoupon, grpc_code });
    expect(handled('OK')).toBe(winners.length + 1);
    expect(handled('ResourceExhausted')).toBe(refused.length);
    expect(handled('FailedPrecondition')).toBe(1);
    // Refused by the auth interceptor, inside the metrics interceptor.
    expect(handled('Unauthenticated')).toBe(1);
    expect(handled('Internal')).toBe(0);
    const calls = CALLERS + 3;
    expect(sumOf(apiSamples, 'grpc_server_started_total', issueCoupon)).toBe(calls);
    expect(sumOf(apiSamples, 'grpc_server_handling_seconds_count', issueCoupon)).toBe(calls);
    expect(sumOf(apiSamples, 'grpc_server_handled_total', { grpc_method: 'CreateCoupon', grpc_code: 'OK' })).toBe(2);

    expect(sumOf(apiSamples, 'coupon_publish_seconds_count', { outcome: 'ok' })).toBe(winners.length);
    expect(sumOf(apiSamples, 'coupon_publish_seconds_count', { outcome: 'failed' })).toBe(0);
    expect(apiSamples.find((s) => s.name === 'coupon_publish_queue_depth')?.value).toBe(0);
    expect(sumOf(apiSamples, 'coupon_gate_rebuilds_total')).toBe(0);

    expect(sumOf(issuerSamples, 'coupon_issuer_rows_total')).toBe(rows);
    expect(sumOf(issuerSamples, 'coupon_issuer_batch_seconds_count', { outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(sumOf(issuerSamples, 'coupon_dead_lettered_records_total', { topic: topics.issue, reason: 'BAD_MAGIC' })).toBe(1);
    // What waits on the dead-letter topic is its replay group's lag.
    expect(sumOf(issuerSamples, 'kafka_consumergroup_lag', { consumergroup: replayGroupId(env.KAFKA_CLIENT_ID, topics.issueDlt), topic: topics.issueDlt })).toBe(1);
    const groups = redemptionGroups(env.KAFKA_REDEMPTION_GROUP);
    for (const [group, topic] of [[groups.ledger, topics.redemption], [groups.paymentResult, topics.paymentResult]] as const) {
      expect(issuerSamples.filter((s) => s.name === 'kafka_consumergroup_lag' && s.labels.consumergroup === group && s.labels.topic === topic)).toHaveLength(config.KAFKA_TOPIC_PARTITIONS);
    }

    for (const samples of [apiSamples, issuerSamples]) {
      for (const dependency of ['postgres', 'redis', 'kafka', 'registry']) expect(sumOf(samples, 'coupon_dependency_up', { dependency }), dependency).toBe(1);
      expect(samples.some((s) => s.name === 'process_cpu_user_seconds_total' && s.value > 0)).toBe(true);
      expect(samples.some((s) => s.name === 'nodejs_eventloop_lag_seconds')).toBe(true);
    }
  });

  it('export every metric the alert rules use (coupon_reconcile_drift aside: the reconcile job exports it)', () => {
    const rules = readFileSync(join(import.meta.dirname, '..', '..', 'ops', 'prometheus', 'alerts.yml'), 'utf8');
    const used = new Set([...rules.matchAll(/\b((?:coupon|grpc_server|kafka_consumergroup)_[a-z_]+)\b/g)].map((m) => m[1]!.replace(/_(count|sum|bucket)$/, '')));
    used.delete('coupon_reconcile_drift');
    expect(used.size).toBeGreaterThanOrEqual(5);
    for (const name of used) expect(`${apiText}\n${issuerText}`, name).toContain(`# TYPE ${name} `);
  });

  it('draw the sale in `npm run watch`, which ends by itself once the coupon is COMPLETE', async () => {
    const ports = (p: ServiceProcess) => new URL(p.metricsUrl).port;
    const { code, stdout, stderr } = await run(process.execPath, ['src/bin/watch.ts', couponId], {
      ...env, API_PORT: new URL(api.url).port, API_METRICS_PORT: ports(api), ISSUER_METRICS_PORT: ports(issuer),
    });
    expect(code, stderr).toBe(0);
    expect(stdout).toContain('COMPLETE');
    expect(stdout).toMatch(/accepted\s+\[█{30}\]\s+5 \/ 5\s+100\.0%/);
    expect(stdout).toMatch(/issued\s+\[█{30}\]\s+5 \/ 5/);
    expect(stdout).toMatch(new RegExp(`lag\\s+0 records on ${topics.issue.replace(/\./g, '\\.')}`));
    expect(stdout).toContain('1 dead-lettered since coupon-issuer started, 1 waiting on dead-letter topics (npm run dlt:replay)');
  });

  it('count a stream when it ends: a Health Watch the caller cancels is handled Canceled', async () => {
    const watch = { grpc_type: 'server_stream', grpc_service: 'grpc.health.v1.Health', grpc_method: 'Watch' };
    const abort = new AbortController();
    const health = createClient(Health, createGrpcTransport({ baseUrl: api.url }));
    for await (const _ of health.watch({ service: '' }, { signal: abort.signal })) break;
    abort.abort();
    await until('the cancelled Watch to be counted', async () => sumOf(await scrape(api.metricsUrl), 'grpc_server_handled_total', { ...watch, grpc_code: 'Canceled' }) === 1, 10_000);
    const samples = await scrape(api.metricsUrl);
    expect(sumOf(samples, 'grpc_server_started_total', watch)).toBe(1);
    expect(sumOf(samples, 'grpc_server_handling_seconds_count', watch)).toBe(1);
  });

  it('refuse settings that would put two servers on one port', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/issuer.ts'], { API_METRICS_PORT: '9999', ISSUER_METRICS_PORT: '9999' });
    expect(code).toBe(2);
    expect(stderr).toContain('ISSUER_METRICS_PORT="9999": is 9999, the same as API_METRICS_PORT');
  });

  it('answer 404 off /metrics', async () => {
    const res = await fetch(new URL('/other', api.metricsUrl));
    expect(res.status).toBe(404);
    expect((await scrape(issuer.metricsUrl)).length).toBeGreaterThan(0);
  });
});
