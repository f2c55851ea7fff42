// The issuer bench: rows per second draining a backlog of accepted requests already on the topic,
// as the gate would have left them, and the INSERT statements used (coupon-issuer logs its totals
// when it stops). CPU shares over the drain.
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { CouponIssueRequestedSchema } from '../gen/coupon/events/v1/issue_pb.js';
import { EventRegistry } from '../src/events/registry.ts';
import { topicNames } from '../src/events/topics.ts';
import type { Db } from '../src/store/db.ts';
import { couponClient, createCoupon } from '../test/support/coupons.ts';
import { couponKeys } from '../src/store/keys.ts';
import { Redis } from 'ioredis';
import { config, kafka } from '../test/support/stack.ts';
import { cpuWindow, stackGroups, type CpuReport } from './cpu.ts';
import { progress } from './progress.ts';
import { startService, type LogFormat } from './services.ts';
import { fmtInt } from './stats.ts';

export interface IssuerReport {
  backlog: number;
  seconds: number;
  rowsPerSec: number;
  inserts: number | null;
  rowsPerInsert: number | null;
  couponId: string;
  cpu: CpuReport;
}

export async function issuerBench(o: { backlog: number; logLevel: string; logFormat: LogFormat; env: Record<string, string>; redisUrl: string; logDir: string; db: Db }): Promise<IssuerReport> {
  const { backlog, db } = o;
  const base = { ...o.env, LOG_LEVEL: o.logLevel };
  const topics = topicNames(o.env.KAFKA_TOPIC_PREFIX!);
  progress.say(`[bench] issuer: writing a ${fmtInt(backlog)}-record backlog to ${topics.issue} …`);
  const api = await startService('api', { ...base, API_WORKERS: '1' }, join(o.logDir, 'issuer-bench-api.log'), { logFormat: o.logFormat });
  const client = couponClient(api.address);
  const coupon = await createCoupon(client, backlog, { name: 'bench issuer backlog' });
  client.close();
  await api.stop();

  // The gate's side of those requests: every backlog user a winner with its seq (the issuer drops a
  // record the armed gate holds no reservation of).
  const redis = new Redis(o.redisUrl);
  const keys = couponKeys(coupon.id);
  for (let from = 0; from < backlog; from += 5_000) {
    const fields: string[] = [];
    for (let i = from; i < Math.min(backlog, from + 5_000); i++) fields.push(`backlog-${i}`, String(i + 1));
    await redis.hset(keys.winners, ...fields);
  }
  await redis.set(keys.next, String(backlog));
  redis.disconnect();

  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  const codec = await registry.forTopic(topics.issue, CouponIssueRequestedSchema);
  const producer = kafka().producer();
  await producer.connect();
  for (let from = 0; from < backlog; from += 5_000) {
    const messages = [];
    for (let i = from; i < Math.min(backlog, from + 5_000); i++) {
      messages.push({ key: coupon.id, value: codec.encode(create(CouponIssueRequestedSchema, { couponId: coupon.id, userId: `backlog-${i}`, seq: BigInt(i + 1), requestedAt: timestampNow(), totalQuantity: BigInt(backlog) })) });
    }
    await producer.send({ topic: topics.issue, acks: -1, messages });
  }
  await producer.disconnect();

  const issuer = await startService('issuer', base, join(o.logDir, 'issuer-bench-issuer.log'), { keep: ['issuer totals'], logFormat: o.logFormat });
  const cpu = cpuWindow(stackGroups({ issuerPid: issuer.pid, redisPort: Number(new URL(o.redisUrl).port || 6379) }));
  const started = performance.now();
  const deadline = Date.now() + 600_000;
  let issued = 0;
  while (Date.now() < deadline) {
    const row = await db('coupons').where({ id: coupon.id }).first<{ issued_count: number } | undefined>('issued_count');
    issued = Number(row?.issued_count ?? 0);
    progress.update(`[bench] issuer: ${((performance.now() - started) / 1000).toFixed(1)} s, issued ${fmtInt(issued)}/${fmtInt(backlog)}`);
    if (issued >= backlog) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const seconds = (performance.now() - started) / 1000;
  const cpuReport = cpu.end();
  progress.clear();
  await issuer.stop();
  if (issued < backlog) throw new Error(`the issuer issued ${issued} of ${backlog} within 10 minutes`);
  const totals = issuer.kept.find((l) => l.msg === 'issuer totals') as { inserts?: number } | undefined;
  const inserts = totals?.inserts ?? null;
  return { backlog, seconds, rowsPerSec: backlog / seconds, inserts, rowsPerInsert: inserts ? backlog / inserts : null, couponId: coupon.id, cpu: cpuReport };
}
