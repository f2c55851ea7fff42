// The fuzz campaign, shared by the normal suite (test/fuzz/fuzz.test.ts, a bounded run) and
// `npm run fuzz -- --runs N` (fuzz/run.ts, as long as you like). It starts a real coupon-api (and,
// while seeding, a coupon-issuer) on the shared stack, seeds coupons in every state, then sends one
// generated call at a time (fuzz/calls.ts) and checks, for each:
// - the answer is never INTERNAL or UNKNOWN, and every error carries a coupon.v1.ErrorDetail;
// - a refused call changed nothing: the fuzz coupons' rows in PostgreSQL (coupons, user_coupons,
//   redemption_cancellations), all their Redis keys, and the coupon index are as before. Two answers
//   are exempt, because they are documented to write: UNAVAILABLE (a failed publish releases the
//   slot and leaves a tombstone) and CancelRedemption's ORDER_MISMATCH (the order is remembered as
//   cancelled);
// - every 100 calls and at the end, grpc.health.v1 Check answers SERVING and the process is alive.
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { Code } from '@connectrpc/connect';
import type { Redis } from 'ioredis';
import type { Db } from '../src/store/db.ts';
import { couponClient, createCoupon } from '../test/support/coupons.ts';
import { couponState, type CouponState } from '../test/support/coupon-state.ts';
import { startService, type ServiceProcess } from '../test/support/processes.ts';
import { db as newDb, redis as newRedis, uniqueEnv, until } from '../test/support/stack.ts';
import { WireClient, wireName, WIRES, type Outcome } from '../test/support/wire.ts';
import { UserCouponState } from '../gen/coupon/v1/coupon_pb.js';
import { callArb, describeCall, type Call, type Pools } from './calls.ts';

export interface Target {
  api: ServiceProcess;
  wire: WireClient;
  pools: Pools;
  /** The seeded coupons whose stored state refused calls must leave alone. */
  couponIds: string[];
  topicPrefix: string;
  db: Db;
  redis: Redis;
  close(): Promise<void>;
}

const MAX_MESSAGE_BYTES = 65_536;

/** Starts coupon-api on its own topics and seeds coupons: open, sold out, scheduled, closed and expired, with users issued, redeemed, cancelled and pending. */
export async function startTarget(): Promise<Target> {
  const env = { ...uniqueEnv('fuzz'), API_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES), PUBLISH_TIMEOUT_MS: '30000', RECOVERY_STALE_MS: '120000' };
  const db = newDb();
  const redis = newRedis();
  const api = await startService('api', env);
  const issuer = await startService('issuer', env);
  const client = couponClient(api.address);
  try {
    const open = await createCoupon(client, 40, { closesInMs: 3_600_000, validForMs: 7_200_000, name: 'fuzz open' });
    const tiny = await createCoupon(client, 2, { name: 'fuzz sold out' });
    const scheduled = await createCoupon(client, 5, { opensInMs: 3_600_000, name: 'fuzz scheduled' });
    const closing = await createCoupon(client, 5, { closesInMs: 1_500, name: 'fuzz closed' });
    const expiring = await createCoupon(client, 5, { validForMs: 4_000, name: 'fuzz expired' });
    const issued = [[open.id, 'u-redeemed'], [open.id, 'u-cancelled'], [open.id, 'u-issued'], [tiny.id, 'b1'], [tiny.id, 'b2'], [expiring.id, 'e1']] as const;
    for (const [couponId, userId] of issued) await client.issueCoupon({ couponId, userId });
    for (const [couponId, userId] of issued) {
      await until(`${userId} issued`, async () => (await client.getUserCoupon({ couponId, userId })).userCoupon?.state === UserCouponState.ISSUED);
    }
    await client.redeemCoupon({ couponId: open.id, userId: 'u-redeemed', orderId: 'order-1' });
    await client.redeemCoupon({ couponId: open.id, userId: 'u-cancelled', orderId: 'order-2' });
    await client.cancelRedemption({ couponId: open.id, userId: 'u-cancelled', orderId: 'order-2' });
    // From here on only coupon-api runs: nothing changes stored state but the calls themselves.
    await issuer.stop();
    await client.issueCoupon({ couponId: open.id, userId: 'u-pending' });
    // Closed, and expired for its issued user.
    await new Promise((r) => setTimeout(r, Math.max(0, Number(expiring.validUntil!.seconds) * 1_000 - Date.now() + 100)));
    const couponIds = [open.id, tiny.id, scheduled.id, closing.id, expiring.id];
    const wire = new WireClient(api.url);
    return {
      api, wire, couponIds, topicPrefix: env.KAFKA_TOPIC_PREFIX, db, redis,
      pools: {
        couponIds: [...couponIds, '00000000-0000-4000-8000-000000000000', 'not-a-uuid'],
        userIds: ['u-redeemed', 'u-cancelled', 'u-issued', 'u-pending', 'b1', 'b2', 'e1', 'nobody'],
        orderIds: ['order-1', 'order-2', 'order-3'],
        holdings: [...issued.map(([c, u]) => [c, u] as [string, string]), [open.id, 'u-pending']],
        maxMessageBytes: MAX_MESSAGE_BYTES,
      },
      async close() {
        wire.close();
        await api.stop();
        redis.disconnect();
        await db.destroy();
      },
    };
  } catch (err) {
    await issuer.stop();
    await api.stop();
    redis.disconnect();
    await db.destroy();
    throw err;
  } finally {
    client.close();
  }
}

export interface Report {
  calls: number;
  elapsedMs: number;
  healthChecks: number;
  /** method → wire → outcome code (with the reason) → count. */
  outcomes: Map<string, Map<string, Map<string, number>>>;
  /** kind of call → outcome code → count. */
  kinds: Map<string, Map<string, number>>;
}

const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
function child<V>(m: Map<string, V>, k: string, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) { v = make(); m.set(k, v); }
  return v;
}

/** Writes on purpose despite answering an error (see the file comment). */
const mayWrite = (call: Call, o: Outcome) => o.code === Code.Unavailable || (call.method === 'CancelRedemption' && o.detail?.reason === 'ORDER_MISMATCH');

async function healthy(target: Target): Promise<void> {
  if (target.api.child.exitCode !== null) throw new Error(`coupon-api exited with ${target.api.child.exitCode}`);
  const grpc = WIRES.find((w) => w.protocol === 'grpc' && w.encoding === 'proto')!;
  const o = await target.wire.send(grpc, 'Check', new Uint8Array(0), { path: '/grpc.health.v1.Health/Check' });
  // HealthCheckResponse{status: SERVING} is the two bytes 08 01.
  if (o.codeName !== 'ok' || Buffer.compare(Buffer.from(o.body ?? []), Buffer.from([0x08, 0x01])) !== 0) {
    throw new Error(`health Check answered ${o.codeName} ${o.message} ${Buffer.from(o.body ?? []).toString('hex')}`);
  }
}

/** What a fresh connection sees, and what coupon-api logged last, after a call got no answer. */
async function diagnose(target: Target): Promise<string> {
  const fresh = new WireClient(target.api.url);
  try {
    const probes = await Promise.all(WIRES.slice(0, 3).map(async (w) => {
      const o = await fresh.send(w, 'Check', new Uint8Array(0), { path: '/grpc.health.v1.Health/Check', timeoutMs: 3_000 }).catch((e: unknown) => (e as Error).message);
      return `${wireName(w)} health: ${typeof o === 'string' ? o : o.codeName}`;
    }));
    const grpc = WIRES.find((w) => w.protocol === 'grpc' && w.encoding === 'proto')!;
    const same = await target.wire.send(grpc, 'Check', new Uint8Array(0), { path: '/grpc.health.v1.Health/Check', timeoutMs: 3_000 }).then((o) => o.codeName, (e: unknown) => (e as Error).message);
    probes.push(`the fuzzer's own connection: health ${same}`);
    const logs = target.api.logs.filter((l) => Number(l.level) >= 40).slice(-5).map((l) => JSON.stringify(l));
    return `${probes.join('; ')}; process ${target.api.child.exitCode === null ? 'alive' : `exited ${target.api.child.exitCode}`}; last warnings: ${logs.join(' | ') || 'none'}`;
  } finally { fresh.close(); }
}

export interface CampaignOptions {
  runs: number;
  seed?: number;
  /** Called every 100 calls. */
  progress?: (report: Report) => void;
  /** Report the first failing call as it is, without shrinking it. */
  endOnFailure?: boolean;
  /** Called after every call. */
  trace?: (call: Call, outcome: string, ms: number) => void;
}

/** Sends `runs` generated calls one at a time and checks the properties; throws fast-check's report (with the shrunk call) on the first violation. */
export async function runCampaign(target: Target, options: CampaignOptions): Promise<Report> {
  const report: Report = { calls: 0, elapsedMs: 0, healthChecks: 0, outcomes: new Map(), kinds: new Map() };
  const started = performance.now();
  const snapshot = () => couponState(target.db, target.redis, target.couponIds, target.topicPrefix);
  // The state before the next call: still valid after a refused call (it must not have changed).
  let known: CouponState | undefined;

  const property = fc.asyncProperty(callArb(target.pools), async (call) => {
    const before = known ?? await snapshot();
    known = undefined;
    const sentAt = performance.now();
    const o = await target.wire.send(call.wire, call.method, call.payload, { raw: call.raw, headers: call.headers, timeoutMs: 15_000 })
      .catch(async (err: unknown) => { throw new Error(`${(err as Error).message}\n  ${describeCall(call)}\n  then: ${await diagnose(target)}`); });
    report.calls++;
    const outcome = o.ok ? 'ok' : `${o.codeName}/${o.detail?.reason ?? '(no detail)'}`;
    options.trace?.(call, outcome, performance.now() - sentAt);
    bump(child(child(report.outcomes, call.method, () => new Map<string, Map<string, number>>()), wireName(call.wire), () => new Map<string, number>()), outcome);
    bump(child(report.kinds, call.kind, () => new Map<string, number>()), o.codeName);

    if (o.code === Code.Internal || o.code === Code.Unknown) throw new Error(`answered ${outcome}: ${o.message}\n  ${describeCall(call)}`);
    if (o.bareHttp) throw new Error(`answered a bare HTTP ${o.http}\n  ${describeCall(call)}`);
    if (!o.ok && !o.detail) throw new Error(`answered ${o.codeName} without an ErrorDetail: ${o.message}\n  ${describeCall(call)}`);
    if (!o.ok && !mayWrite(call, o)) {
      const after = await snapshot();
      if (!isDeepStrictEqual(before, after)) {
        throw new Error(`a refused call (${outcome}) changed stored state\n  ${describeCall(call)}\n  before: ${JSON.stringify(before)}\n  after:  ${JSON.stringify(after)}`);
      }
      known = after;
    }
    if (report.calls % 100 === 0) {
      await healthy(target);
      report.healthChecks++;
      report.elapsedMs = performance.now() - started;
      options.progress?.(report);
    }
  });
  await fc.assert(property, { numRuns: options.runs, seed: options.seed, includeErrorInReport: true, endOnFailure: options.endOnFailure ?? false });
  await healthy(target);
  report.healthChecks++;
  report.elapsedMs = performance.now() - started;
  return report;
}

/** The report: per RPC × protocol, the calls and each outcome (code and ErrorDetail reason) with its count. */
export function formatReport(report: Report): string {
  const lines: string[] = ['RPC × protocol: calls — outcomes'];
  const methodWidth = Math.max(...[...report.outcomes.keys()].map((m) => m.length));
  for (const [method, byWire] of [...report.outcomes].sort(([a], [b]) => a.localeCompare(b))) {
    for (const [wire, byCode] of [...byWire].sort(([a], [b]) => a.localeCompare(b))) {
      const total = [...byCode.values()].reduce((a, b) => a + b, 0);
      const outcomes = [...byCode].sort(([, a], [, b]) => b - a).map(([c, n]) => `${c} ${n}`).join(', ');
      lines.push(`  ${method.padEnd(methodWidth)}  ${wire.padEnd(18)} ${String(total).padStart(5)} — ${outcomes}`);
    }
  }
  lines.push('', 'by kind of call:');
  for (const [kind, byCode] of [...report.kinds].sort(([a], [b]) => a.localeCompare(b))) {
    const total = [...byCode.values()].reduce((a, b) => a + b, 0);
    lines.push(`  ${kind.padEnd(12)} ${String(total).padStart(5)} — ${[...byCode].sort(([, a], [, b]) => b - a).map(([c, n]) => `${c} ${n}`).join(', ')}`);
  }
  const perSecond = report.calls / (report.elapsedMs / 1_000);
  lines.push('', `${report.calls} calls in ${(report.elapsedMs / 1_000).toFixed(1)} s (${perSecond.toFixed(0)} calls/s), ${report.healthChecks} health checks, all SERVING`);
  return lines.join('\n');
}
