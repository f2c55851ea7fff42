// `npm run bench`: figures, not assertions. Everything runs on this machine against the real stack:
//   1. the gate: IssueCoupon calls per second and latency through coupon-api, from @grpc/grpc-js;
//   2. the issuer: rows per second draining a 100,000-record backlog, and INSERT statements used.
// Sizes can be changed with BENCH_GATE_CALLS, BENCH_GATE_CONCURRENCY and BENCH_BACKLOG.
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { CouponIssueRequestedSchema } from '../gen/coupon/events/v1/issue_pb.js';
import { EventRegistry } from '../src/events/registry.ts';
import { topicNames } from '../src/events/topics.ts';
import { startService } from '../test/support/processes.ts';
import { couponClient, createCoupon } from '../test/support/coupons.ts';
import { config, db as newDb, kafka, uniqueEnv, until } from '../test/support/stack.ts';

const GATE_CALLS = Number(process.env.BENCH_GATE_CALLS ?? 50_000);
const GATE_CONCURRENCY = Number(process.env.BENCH_GATE_CONCURRENCY ?? 256);
const BACKLOG = Number(process.env.BENCH_BACKLOG ?? 100_000);

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
const db = newDb();

async function gateBench() {
  const env = uniqueEnv('bench-gate');
  const api = await startService('api', env);
  const clients = Array.from({ length: 4 }, () => couponClient(api.address, true));
  const quantity = Math.floor(GATE_CALLS / 2);
  const coupon = await createCoupon(clients[0]!, quantity);
  const latencies: number[] = [];
  let ok = 0; let soldOut = 0; let other = 0; let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: GATE_CONCURRENCY }, async (_, w) => {
    while (next < GATE_CALLS) {
      const i = next++;
      const t0 = performance.now();
      try {
        await clients[w % clients.length]!.issueCoupon({ couponId: coupon.id, userId: `bench-user-${i}` }, { timeoutMs: 30_000 });
        ok++;
      } catch (err) {
        if ((err as { reason?: string }).reason === 'COUPON_SOLD_OUT') soldOut++; else other++;
      }
      latencies.push(performance.now() - t0);
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  clients.forEach((c) => c.close());
  await api.stop();
  console.log(`gate: ${GATE_CALLS} IssueCoupon calls (quantity ${quantity}, ${GATE_CONCURRENCY} in flight, 4 HTTP/2 connections)`);
  console.log(`  ${Math.round(GATE_CALLS / seconds)} calls/s over ${seconds.toFixed(1)} s; OK ${ok}, SOLD_OUT ${soldOut}, other ${other}`);
  console.log(`  latency ms: p50 ${pct(latencies, 50).toFixed(1)}, p99 ${pct(latencies, 99).toFixed(1)}, max ${latencies.at(-1)!.toFixed(1)}`);
}

async function issuerBench() {
  const env = uniqueEnv('bench-issuer');
  const topics = topicNames(env.KAFKA_TOPIC_PREFIX);
  const api = await startService('api', env);
  const client = couponClient(api.address);
  const coupon = await createCoupon(client, BACKLOG);
  client.close();
  await api.stop();

  // The backlog: BACKLOG accepted requests already on the topic, as the gate would have left them.
  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  const codec = await registry.forTopic(topics.issue, CouponIssueRequestedSchema);
  const producer = kafka().producer();
  await producer.connect();
  for (let from = 0; from < BACKLOG; from += 5_000) {
    const messages = [];
    for (let i = from; i < Math.min(BACKLOG, from + 5_000); i++) {
      messages.push({ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId: `backlog-${i}`, seq: BigInt(i + 1), requestedAt: timestampNow(), totalQuantity: BigInt(BACKLOG) })) });
    }
    await producer.send({ topic: topics.issue, acks: -1, messages });
  }
  await producer.disconnect();

  const issuer = await startService('issuer', env);
  const started = performance.now();
  await until('the backlog to drain', async () => {
    const rows = await db('user_coupons').where({ coupon_id: coupon.id }).count<{ count: string }[]>('* as count');
    return Number(rows[0]?.count) === BACKLOG;
  }, 600_000, 100);
  const seconds = (performance.now() - started) / 1000;
  await issuer.stop();
  const totals = issuer.logs.find((l) => l.msg === 'issuer totals') as { inserts?: number; batches?: number } | undefined;
  console.log(`issuer: drained a ${BACKLOG}-record backlog in ${seconds.toFixed(1)} s = ${Math.round(BACKLOG / seconds)} rows/s`);
  console.log(`  INSERT statements: ${totals?.inserts ?? '?'} (one per batch; ${totals?.inserts ? Math.round(BACKLOG / totals.inserts) : '?'} rows per INSERT on average)`);
}

try {
  const which = process.argv[2];
  if (!which || which === 'gate') await gateBench();
  if (!which || which === 'issuer') await issuerBench();
} finally {
  await db.destroy();
}
