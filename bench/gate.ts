// The gate bench: coupon-api and coupon-issuer as `npm start` runs them, loaded by a generator in
// its own process, against the real Redis, Kafka, registry and PostgreSQL. For each API_WORKERS
// setting (1, then the chosen count) and each protocol: the no-op ceiling (grpc.health.v1.Health/
// Check on the same port, same load), then the gate (IssueCoupon on a fresh coupon of quantity Q),
// followed until the issuer has issued every winner. Before them, the ceilings that need no API:
// the gate's Lua script alone and PostgreSQL's bulk insert. Per run, what a call costs: coupon-api's
// CPU, the Redis commands run, and the share of IssueCoupon answered in process. With --compare,
// another commit's coupon-api and coupon-issuer (bench/compare.ts) take the same runs, interleaved
// with this checkout's per API_WORKERS setting (this checkout first at the first setting, the ref
// first at the next).
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { Admin } from 'kafkajs';
import type { Redis } from 'ioredis';
import { topicNames } from '../src/events/topics.ts';
import type { Db } from '../src/store/db.ts';
import { couponKeys } from '../src/store/keys.ts';
import { tokenFor } from '../test/support/auth.ts';
import { couponClient, createCoupon } from '../test/support/coupons.ts';
import { insertCeiling, luaCeiling, type InsertCeiling, type LuaCeiling } from './ceilings.ts';
import { cpuWindow, stackGroups, type CpuReport } from './cpu.ts';
import { distinctUsers, runLoad, type GrpcClient, type LoadRun, type Protocol } from './load.ts';
import { progress } from './progress.ts';
import { metricSum, scrape, startService, type LogFormat, type Service } from './services.ts';
import { acceptedSeries, fmtInt, latencyOf, latencySeries, type Latency, type LatencyBucket } from './stats.ts';

export interface GateSettings {
  quantity: number;
  users: number;
  requests: number;
  connections: number;
  protocols: Protocol[];
  /** API_WORKERS of the main stack (npm start's default: availableParallelism()). */
  workers: number;
  durationCapS: number;
  /** Calls of each kind sent to a freshly started coupon-api before it is measured (JIT, pools, connections); 0: none. */
  warmup: number;
  grpcClient: GrpcClient;
  logLevel: string;
  logFormat: LogFormat;
  outDir: string;
}

/** The code whose coupon-api and coupon-issuer run: this checkout, or a --compare ref's worktree. */
export interface Code {
  /** 'this checkout', or the ref as given to --compare. */
  label: string;
  /** The commit (this checkout: HEAD, and whether src/ has changes not committed). */
  commit: string;
  root: string;
  /** Topic prefix, consumer groups, and for a ref its own DATABASE_URL. */
  env: Record<string, string>;
  /** Its ledger. */
  db: Db;
  /** Coupons the bench created there (for cleanup). */
  created: string[];
}

export interface Issuance {
  couponId: string;
  quantity: number;
  /** min(Q, distinct users of the run). */
  expected: number;
  /** First call sent → the ledger holds every winner (sampled every 100 ms; null if it never did). */
  firstCallToIssuedMs: number | null;
  /** Redis held every winner → the ledger did (both sampled every 100 ms): how far the issuer trailed the gate. */
  allWonToIssuedMs: number | null;
  /** Rows over first issued row (issued_at) → all issued (sampled). */
  issuerRowsPerSec: number | null;
  /** INSERT statements the issuer ran for this coupon (coupon_issuer_batch_seconds_count, outcome ok). */
  inserts: number;
  rowsPerInsert: number | null;
  topicRecords: number;
  /** Winners in Redis (HLEN of the coupon's winners hash). */
  winners: number;
  issued: number;
  ledgerDistinctUsers: number;
  ledgerDistinctSeqs: number;
  seqRange: [number, number];
  /** Distinct seqs among the OK answers the generator saw (undefined when it cannot see gRPC codes). */
  clientDistinctSeqs: number | undefined;
  verdict: { pass: boolean; checks: Record<string, boolean> };
}

/** One poll: winners (HLEN in Redis) at tMs, coupons.issued_count at issuedTMs, ms since the generator started. */
export interface Sample { tMs: number; winners: number; issuedTMs: number; issued: number }

export interface GateRun {
  label: string;
  protocol: Protocol;
  kind: 'noop' | 'issue';
  workers: number;
  load: Omit<LoadRun, 'calls'>;
  answered: number;
  seconds: number;
  callsPerSec: number;
  latencyMs: Latency;
  counts: { ok: number; soldOut: number; errors: number; source: string };
  /** grpc_server_handled_total of the method during the run, by code (coupon-api's own count). */
  serverCodes: Record<string, number>;
  cpu: CpuReport;
  perCall: PerCall;
  issuance?: Issuance;
  series: { latencyBucketMs: number; latency: LatencyBucket[]; samples: Sample[]; okAnswers: { tMs: number; accepted: number }[] };
}

/** What one answered call cost, over a run. */
export interface PerCall {
  /** coupon-api's CPU seconds (user + sys of the primary and every worker, from /proc). */
  apiCpuSeconds: number;
  /** apiCpuSeconds / answered, in µs. */
  apiCpuUs: number | null;
  /**
   * Commands Redis ran between INFO commandstats before the run and after it (for a sale: after
   * every winner was issued), the bench's own taken out: every client's, coupon-issuer's and each
   * script's inner commands included.
   */
  redisCommands: number;
  /** The same by command (cmdstat_<name>), the bench's own taken out. */
  redisCommandsByName: Record<string, number>;
  /** What the bench itself sent in that window (its sampler's HLEN, the first INFO), subtracted. */
  benchRedisCommands: number;
  /** redisCommands / answered. */
  redisCommandsPerCall: number | null;
  /** coupon_gate_local_answers_total over the run (coupon-api's metrics, merged by the primary); null when the code has no such metric. */
  localAnswers: number | null;
  /** localAnswers / answered. */
  localShare: number | null;
}

export interface GateReport {
  settings: GateSettings & { env: Record<string, string> };
  /** This checkout's commit. */
  commit: string;
  redis: { url: string; own: boolean; otherCommandsPerSecBefore: number };
  ceilings: { lua: LuaCeiling; insert: InsertCeiling };
  /** This checkout's runs. */
  runs: GateRun[];
  /** With --compare: the ref's code and its runs, the same settings. */
  compare?: { ref: string; commit: string; worktree: string; env: Record<string, string>; runs: GateRun[] };
}

/** Latency slices for the chart: about 40 over the run, 100 ms to 1 s each. */
export const bucketMs = (seconds: number) => Math.min(1_000, Math.max(100, Math.round((seconds * 1000) / 40 / 50) * 50));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function serverCodes(text: string, service: string, method: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('grpc_server_handled_total{') || !line.includes(`grpc_service="${service}"`) || !line.includes(`grpc_method="${method}"`)) continue;
    const code = /grpc_code="([^"]+)"/.exec(line)?.[1];
    if (code) out[code] = (out[code] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}
function diff(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v - (a[k] ?? 0) !== 0) out[k] = v - (a[k] ?? 0);
  return out;
}

async function topicEnd(admin: Admin, topic: string): Promise<number> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, o) => sum + Number(o.high), 0);
}

interface Ctx {
  s: GateSettings;
  code: Code;
  /** '' for this checkout, else a tag for file names and labels. */
  tag: string;
  db: Db;
  redis: Redis;
  redisPort: number;
  admin: Admin;
  issuer: Service;
  topic: string;
  token: string;
  /** Shared by every code's runs: numbers the run folders and the users' prefixes. */
  counter: { runs: number };
}

/** Every command Redis has run, by name (INFO commandstats: cmdstat_<name>:calls=N). */
export async function commandStats(redis: Redis): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of (await redis.info('commandstats')).matchAll(/^cmdstat_(\S+?):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** coupon_gate_local_answers_total, or null when coupon-api does not export it. */
const localAnswers = (text: string) => (/^# TYPE coupon_gate_local_answers_total /m.test(text) ? metricSum(text, 'coupon_gate_local_answers_total') : null);

async function oneRun(ctx: Ctx, api: Service, workers: number, protocol: Protocol, kind: 'noop' | 'issue'): Promise<GateRun> {
  const { s } = ctx;
  const label = `${protocol} ${kind === 'issue' ? 'gate' : 'no-op'} W=${workers}${ctx.tag ? ` [${ctx.code.label}]` : ''}`;
  const runIndex = ++ctx.counter.runs;
  const dir = join(s.outDir, `${String(runIndex).padStart(2, '0')}-${ctx.tag ? `${ctx.tag}-` : ''}${protocol}-${kind}-w${workers}`);
  mkdirSync(dir, { recursive: true });
  const [service, method] = kind === 'issue' ? ['coupon.v1.CouponService', 'IssueCoupon'] : ['grpc.health.v1.Health', 'Check'];

  let couponId = '';
  if (kind === 'issue') {
    const client = couponClient(api.address);
    try { couponId = (await createCoupon(client, s.quantity, { name: `bench ${label}` })).id; } finally { client.close(); }
    ctx.code.created.push(couponId);
  }
  const winnersKey = couponKeys(couponId).winners;
  const metrics0 = await scrape(api.metricsUrl);
  const codes0 = serverCodes(metrics0, service, method);
  const local0 = localAnswers(metrics0);
  const inserts0 = metricSum(await scrape(ctx.issuer.metricsUrl), 'coupon_issuer_batch_seconds_count', { outcome: 'ok' });
  const records0 = kind === 'issue' ? await topicEnd(ctx.admin, ctx.topic) : 0;

  const expectedWinners = Math.min(s.quantity, distinctUsers({ ...s, protocol, kind }));
  const samples: Sample[] = [];
  // Redis commands from here to the second INFO: the first INFO itself counts in the second one's
  // figures (Redis counts a command after running it), and so does each sampler HLEN.
  const stats0 = await commandStats(ctx.redis);
  let benchCommands = 1;
  const originMs = Date.now();
  let sampling = true;
  let answeredServer = 0;
  const sampler = (async () => {
    let lastScrape = 0;
    while (sampling) {
      const t = Date.now();
      if (kind === 'issue') {
        benchCommands++;
        // Each value is stamped when its answer arrives (a poll can wait behind a busy event loop or database).
        const [w, i] = await Promise.all([
          ctx.redis.hlen(winnersKey).then((v) => ({ v, t: Date.now() - originMs })),
          ctx.db('coupons').where({ id: couponId }).first<{ issued_count: number } | undefined>('issued_count').then((row) => ({ v: Number(row?.issued_count ?? 0), t: Date.now() - originMs })),
        ]);
        samples.push({ tMs: w.t, winners: w.v, issuedTMs: i.t, issued: i.v });
      }
      if (t - lastScrape >= 1_000) {
        lastScrape = t;
        try {
          const now = serverCodes(await scrape(api.metricsUrl), service, method);
          answeredServer = Object.entries(now).reduce((sum, [k, v]) => sum + v - (codes0[k] ?? 0), 0);
        } catch { /* next time */ }
      }
      const last = samples.at(-1);
      progress.update(`[bench] ${label}: ${((t - originMs) / 1000).toFixed(1)} s, answered ${fmtInt(answeredServer)}/${fmtInt(s.requests)}${last ? `, winners ${fmtInt(last.winners)}, issued ${fmtInt(last.issued)}/${fmtInt(expectedWinners)}` : ''}`);
      await sleep(Math.max(0, 100 - (Date.now() - t)));
    }
  })();

  const cpu = cpuWindow(stackGroups({ apiPid: api.pid, issuerPid: ctx.issuer.pid, redisPort: ctx.redisPort }));
  let run: LoadRun;
  let cpuReport: CpuReport;
  try {
    run = await runLoad({
      url: api.url, protocol, grpcClient: s.grpcClient, kind, couponId, token: ctx.token,
      userPrefix: `b${runIndex}-`, users: s.users, requests: s.requests, connections: s.connections,
      durationCapS: s.durationCapS, dir,
    });
    cpuReport = cpu.end({ 'load generator': 0 });
  } catch (err) {
    sampling = false;
    await sampler;
    throw err;
  }
  // The generator has exited: its CPU is in this process's reaped-children time.
  const gen = cpuReport.groups['load generator']!;
  gen.seconds = run.cpuSeconds;
  gen.cores = run.cpuSeconds / cpuReport.windowSeconds;
  gen.share = gen.cores / cpuReport.cores;
  cpuReport.otherShare = Math.max(0, cpuReport.otherShare - gen.share);

  let issuance: Issuance | undefined;
  if (kind === 'issue') {
    const expected = expectedWinners;
    const deadline = Date.now() + 60_000 + s.quantity;
    while (Date.now() < deadline && !((samples.at(-1)?.issued ?? 0) >= expected)) await sleep(50);
    // One more beat, so the issuer's batch that completed the coupon is in its metrics.
    await sleep(300);
  }
  sampling = false;
  await sampler;
  const stats1 = await commandStats(ctx.redis);
  const metrics1 = await scrape(api.metricsUrl);
  const codes = diff(codes0, serverCodes(metrics1, service, method));
  const local1 = localAnswers(metrics1);

  if (kind === 'issue') {
    const expected = expectedWinners;
    const issuedAt = samples.find((x) => x.issued >= expected);
    const wonAt = samples.find((x) => x.winners >= expected);
    const ledger = (await ctx.db.raw<{ rows: { n: number; users: number; seqs: number; lo: number; hi: number; first: Date | null }[] }>(
      `SELECT count(*)::int AS n, count(DISTINCT user_id)::int AS users, count(DISTINCT seq)::int AS seqs,
              coalesce(min(seq), 0)::int AS lo, coalesce(max(seq), 0)::int AS hi, min(issued_at) AS first
       FROM user_coupons WHERE coupon_id = ?`, [couponId])).rows[0]!;
    const winners = await ctx.redis.hlen(winnersKey);
    const inserts = metricSum(await scrape(ctx.issuer.metricsUrl), 'coupon_issuer_batch_seconds_count', { outcome: 'ok' }) - inserts0;
    const topicRecords = (await topicEnd(ctx.admin, ctx.topic)) - records0;
    const clientSeqs = run.generator === 'h2load' ? undefined : new Set(run.calls.filter((c) => c.cls === 'a').map((c) => c.detail)).size;
    const issuedAbsMs = issuedAt ? originMs + issuedAt.issuedTMs : null;
    const checks: Record<string, boolean> = {
      [`winners in Redis = ${expected}`]: winners === expected,
      [`issued in Postgres = ${expected}`]: ledger.n === expected,
      'no user twice in Postgres': ledger.users === ledger.n,
      'no seq twice, seqs 1..issued': ledger.seqs === ledger.n && ledger.lo === (ledger.n ? 1 : 0) && ledger.hi === ledger.n,
      [`records on the topic ≥ ${expected}`]: topicRecords >= expected,
      ...(clientSeqs === undefined ? {} : { [`distinct seqs the generator was given = ${expected}`]: clientSeqs === expected }),
    };
    issuance = {
      couponId, quantity: s.quantity, expected,
      firstCallToIssuedMs: issuedAbsMs === null ? null : issuedAbsMs - run.firstStartMs,
      allWonToIssuedMs: issuedAt && wonAt ? issuedAt.issuedTMs - wonAt.tMs : null,
      issuerRowsPerSec: issuedAbsMs !== null && ledger.first ? ledger.n / Math.max(0.001, (issuedAbsMs - ledger.first.getTime()) / 1000) : null,
      inserts, rowsPerInsert: inserts > 0 ? ledger.n / inserts : null, topicRecords, winners, issued: ledger.n,
      ledgerDistinctUsers: ledger.users, ledgerDistinctSeqs: ledger.seqs, seqRange: [ledger.lo, ledger.hi], clientDistinctSeqs: clientSeqs,
      verdict: { pass: Object.values(checks).every(Boolean), checks },
    };
  }

  const answered = run.calls.length;
  const seconds = Math.max(0.001, (run.lastEndMs - run.firstStartMs) / 1000);
  const fromServer = run.generator === 'h2load';
  const genErrors = Object.values(run.generatorErrors).reduce((a, b) => a + b, 0);
  const counts = fromServer
    ? {
        ok: codes.OK ?? 0, soldOut: codes.ResourceExhausted ?? 0,
        errors: Object.entries(codes).filter(([k]) => k !== 'OK' && k !== 'ResourceExhausted').reduce((a, [, v]) => a + v, 0) + genErrors,
        source: "coupon-api's grpc_server_handled_total (+ h2load's own failures)",
      }
    : {
        ok: run.calls.filter((c) => c.cls === 'a').length, soldOut: run.calls.filter((c) => c.cls === 's').length,
        errors: run.calls.filter((c) => c.cls === 'e').length + (run.generator === 'wrk' ? genErrors : 0),
        source: 'the generator (per answer)',
      };
  const { calls, ...load } = run;
  const apiCpuSeconds = Object.entries(cpuReport.groups).filter(([name]) => name === 'api' || name.startsWith('api ')).reduce((sum, [, g]) => sum + g.seconds, 0);
  const byName = diff(stats0, stats1);
  byName.info = (byName.info ?? 0) - 1;
  if (kind === 'issue') byName.hlen = (byName.hlen ?? 0) - (benchCommands - 1);
  for (const [k, v] of Object.entries(byName)) if (v === 0) delete byName[k];
  const redisCommands = Object.values(byName).reduce((a, b) => a + b, 0);
  const localCount = local0 === null || local1 === null ? null : local1 - local0;
  const perCall: PerCall = {
    apiCpuSeconds, apiCpuUs: answered ? (apiCpuSeconds / answered) * 1e6 : null,
    redisCommands, redisCommandsByName: byName, benchRedisCommands: benchCommands, redisCommandsPerCall: answered ? redisCommands / answered : null,
    localAnswers: localCount, localShare: localCount === null || !answered ? null : localCount / answered,
  };
  progress.clear();
  return {
    label, protocol, kind, workers, load, answered, seconds, callsPerSec: answered / seconds,
    latencyMs: latencyOf(calls), counts, serverCodes: codes, cpu: cpuReport, perCall, issuance,
    series: { latencyBucketMs: bucketMs(seconds), latency: latencySeries(calls, originMs, bucketMs(seconds)), samples, okAnswers: fromServer ? [] : acceptedSeries(calls, originMs, 100) },
  };
}

/** Not measured: each protocol's generator sends `warmup` no-op calls and `warmup` IssueCoupon calls (on a coupon of its own) to a fresh coupon-api. */
async function warmUp(ctx: Ctx, api: Service, workers: number, protocol: Protocol): Promise<void> {
  const { s } = ctx;
  const n = Math.min(s.warmup, s.requests);
  if (n === 0) return;
  progress.update(`[bench] warming up coupon-api (API_WORKERS=${workers}${ctx.tag ? `, ${ctx.code.label}` : ''}) over ${protocol}: ${fmtInt(n)} no-op and ${fmtInt(n)} IssueCoupon calls, not measured …`);
  const client = couponClient(api.address);
  let couponId: string;
  try { couponId = (await createCoupon(client, Math.max(1, Math.floor(n / 3)), { name: 'bench warm-up' })).id; } finally { client.close(); }
  ctx.code.created.push(couponId);
  for (const kind of ['noop', 'issue'] as const) {
    const dir = join(s.outDir, `warmup-${ctx.tag ? `${ctx.tag}-` : ''}${protocol}-${kind}-w${workers}`);
    mkdirSync(dir, { recursive: true });
    await runLoad({
      url: api.url, protocol, grpcClient: s.grpcClient, kind, couponId, token: ctx.token, userPrefix: `w${workers}${protocol[0]}${ctx.tag}-`,
      users: n, requests: n, connections: Math.min(s.connections, n), durationCapS: s.durationCapS, dir,
    });
  }
  progress.clear();
}

/** Commands per second that other clients ran on this Redis over a second with none of the bench's services up. */
async function otherRedisLoad(redis: Redis): Promise<number> {
  const total = async () => Object.values(await commandStats(redis)).reduce((a, b) => a + b, 0);
  const a = await total();
  const t0 = performance.now();
  await sleep(1_000);
  const b = await total();
  return Math.max(0, b - a - 1) / ((performance.now() - t0) / 1000);
}

export interface GateDeps {
  redis: Redis;
  redisUrl: string;
  ownRedis: boolean;
  admin: Admin;
  logDir: string;
  /** This checkout's code, then with --compare the ref's. */
  codes: [Code, ...Code[]];
}

export async function gateBench(s: GateSettings, deps: GateDeps): Promise<GateReport> {
  const { redis, admin } = deps;
  const redisPort = Number(new URL(deps.redisUrl).port || 6379);
  const [self, ...refs] = deps.codes;

  const otherCommandsPerSecBefore = await otherRedisLoad(redis);
  if (otherCommandsPerSecBefore >= 10) progress.say(`[bench] note: other clients ran ${fmtInt(otherCommandsPerSecBefore)} commands/s on ${deps.redisUrl} just before the runs; the Redis commands per call below include theirs (--redis own gives the bench a redis-server of its own)`);
  progress.say(`[bench] ceilings: the gate's Lua script alone (redis-benchmark), PostgreSQL bulk insert …`);
  const lua = await luaCeiling(redis, redisPort, { quantity: s.quantity, users: s.users, requests: s.requests, connections: s.connections });
  const insert = await insertCeiling(self.db, { rows: s.quantity, batch: 1_000 });

  const token = await tokenFor('storefront');
  const counter = { runs: 0 };
  const ctxs: Ctx[] = [];
  const byCode = new Map<Code, GateRun[]>(deps.codes.map((c) => [c, []]));
  try {
    for (const [i, code] of deps.codes.entries()) {
      const tag = i === 0 ? '' : `cmp${i}`;
      const base = { ...code.env, LOG_LEVEL: s.logLevel };
      progress.say(`[bench] starting coupon-issuer${tag ? ` of ${code.label} (${code.commit})` : ''} (topic prefix ${code.env.KAFKA_TOPIC_PREFIX}) …`);
      const issuer = await startService('issuer', base, join(deps.logDir, `${tag ? `${tag}-` : ''}issuer.log`), { keep: ['issuer totals'], root: code.root, logFormat: s.logFormat });
      ctxs.push({ s, code, tag, db: code.db, redis, redisPort, admin, issuer, topic: topicNames(code.env.KAFKA_TOPIC_PREFIX!).issue, token, counter });
    }
    const settings = [...new Set([1, s.workers])];
    for (const [si, workers] of settings.entries()) {
      // Each code in turn at each setting, first this checkout, then the other way round (ABBA),
      // so a drift of the machine's load over the bench falls on both alike.
      for (const ctx of si % 2 === 0 ? ctxs : [...ctxs].reverse()) {
        const of = ctx.tag ? ` of ${ctx.code.label}` : '';
        progress.say(`[bench] starting coupon-api${of} with API_WORKERS=${workers} …`);
        const api = await startService('api', { ...ctx.code.env, LOG_LEVEL: s.logLevel, API_WORKERS: String(workers) }, join(deps.logDir, `${ctx.tag ? `${ctx.tag}-` : ''}api-w${workers}.log`), { root: ctx.code.root, logFormat: s.logFormat });
        try {
          for (const protocol of s.protocols) await warmUp(ctx, api, workers, protocol);
          for (const protocol of s.protocols) {
            for (const kind of ['noop', 'issue'] as const) {
              const run = await oneRun(ctx, api, workers, protocol, kind);
              byCode.get(ctx.code)!.push(run);
              progress.say(`[bench] ${run.label}: ${fmtInt(run.callsPerSec)} calls/s, p99 ${run.latencyMs.p99.toFixed(1)} ms, coupon-api ${run.perCall.apiCpuUs?.toFixed(0) ?? '-'} µs CPU/call${run.issuance ? `, verdict ${run.issuance.verdict.pass ? 'pass' : 'FAIL'}` : ''}`);
              await sleep(1_000);
            }
          }
        } finally {
          await api.stop();
        }
      }
    }
  } finally {
    for (const ctx of ctxs) await ctx.issuer.stop();
  }
  const ref = refs[0];
  return {
    settings: { ...s, env: self.env }, commit: self.commit,
    redis: { url: deps.redisUrl, own: deps.ownRedis, otherCommandsPerSecBefore },
    ceilings: { lua, insert }, runs: byCode.get(self)!,
    ...(ref ? { compare: { ref: ref.label, commit: ref.commit, worktree: ref.root, env: ref.env, runs: byCode.get(ref)! } } : {}),
  };
}
