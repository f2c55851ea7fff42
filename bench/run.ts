// `npm run bench`: figures, not assertions, from this machine against the real stack. See --help.
import { writeFileSync, mkdirSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { createConnection } from 'node:net';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { topicNames } from '../src/events/topics.ts';
import { allCouponKeys, activeCouponsKey, legacyCouponIndexKey } from '../src/store/keys.ts';
import { Redis } from 'ioredis';
import { startOwnRedis, type OwnRedis } from '../test/support/redis-server.ts';
import { config, db as newDb, kafka, redis as newRedis, uniqueEnv } from '../test/support/stack.ts';
import { chartHtml } from './chart.ts';
import { prepareCompare, thisCheckout, type ComparedCode } from './compare.ts';
import { listProcs } from './cpu.ts';
import { gateBench, type Code, type GateReport, type GateSettings } from './gate.ts';
import { issuerBench, type IssuerReport } from './issuer.ts';
import type { GrpcClient, Protocol } from './load.ts';
import { progress } from './progress.ts';
import type { LogFormat } from './services.ts';
import { rebuildBench, type RebuildReport } from './rebuild.ts';
import { ratiosOf, renderCompare, renderGate, renderIssuer, renderTargets, targetsOf, type FullReport } from './report.ts';

const root = join(import.meta.dirname, '..');
const HELP = `npm run bench -- [gate | issuer | rebuild | sold-out] [options]

  (no section)  the gate over both protocols, then the issuer (add --rebuild for the rebuild)
  gate          IssueCoupon through coupon-api and coupon-issuer as npm start runs them (JWT
                auth), with API_WORKERS=1 and --workers: per protocol a no-op ceiling (grpc.health.
                v1.Health/Check, same port and load) and the gate on a fresh coupon, followed until
                every winner is issued; plus the gate's Lua script alone (redis-benchmark) and
                PostgreSQL's bulk insert, as ceilings. Per run: coupon-api's CPU per call (/proc),
                Redis commands per call (INFO commandstats before and after), the share of
                IssueCoupon answered in process, the sale against the no-op (calls/s and p99)
  issuer        rows/s draining a backlog of accepted requests already on the topic
  rebuild       a coupon's gate rebuilt from a --rebuild-users ledger after a Redis loss (about
                15 s and 300 MB for a million users)
  sold-out      a sold-out sale's refusals with the in-process sold-out view and without it (one
                run each, on a redis-server of its own): Redis commands per refused IssueCoupon
                and the share answered in process (--quantity [1000], --requests [20000] refusals,
                --connections calls in flight, --workers)

options (defaults in brackets):
  --quantity N        coupons to give out, Q [10000]
  --users N           distinct users, U [30000]
  --requests N        calls in all, R; users repeat when R > U [30000]
  --connections N     connections, C, one call in flight on each [256]
  --protocol P        connect-h1 (Connect JSON over HTTP/1.1, wrk), grpc-h2c (gRPC over h2c,
                      h2load) or both [both]
  --grpc-client G     h2load (one body per process: a few users repeating) or node
                      (bench/grpc-load.ts: one user per call, 3x h2load's CPU per call) [h2load]
  --workers N         API_WORKERS of the main stack [availableParallelism() = ${availableParallelism()}]
  --duration-cap S    stop a load run after S seconds even if calls are unanswered [60]
  --warmup N          calls of each kind (no-op, IssueCoupon on a coupon of its own) sent over
                      each protocol to a freshly started coupon-api before measuring; 0: none [3000]
  --log-level L       LOG_LEVEL of coupon-api and coupon-issuer (npm start: info) [info]
  --log-format F      json (production logging, LOG_PRETTY=false) or pretty (npm start's,
                      LOG_PRETTY=true) of coupon-api and coupon-issuer [json]
  --compare REF       the gate also on another commit's code (a branch, tag, sha, main~3 …) in
                      the same run, settings and machine, interleaved per API_WORKERS (ABBA): its
                      own coupon-api and coupon-issuer from a temporary git worktree (with this
                      checkout's node_modules), its own ledger database bench_cmp_<sha> and topic
                      prefix; prints both and their ratios (COMPARE). The worktree is removed at
                      the end, the database dropped unless --keep
  --redis R           stack (the stack's Redis, as npm start uses it) or own (a redis-server of the
                      bench's own with the stack's settings, so Redis commands per call count no
                      other client's; --keep keeps nothing of it) [stack]
  --backlog N         the issuer bench's backlog [100000]
  --rebuild           with no section: run the rebuild too
  --rebuild-users N   the rebuild bench's ledger size [1000000]
  --keep              keep the bench's coupons, Redis keys, topics and schema subjects, and
                      --compare's ledger database
  --out DIR           where results go, a folder per run [bench/results]
  -h, --help          this text

Needs the local stack (PostgreSQL, Redis, Kafka, the schema registry: npm run stack:up, or npm
start, which starts it too). Starts its own coupon-api and coupon-issuer on free ports under a
topic prefix of its own, so a running npm start is left alone. wrk, h2load and redis-benchmark come
from Debian's wrk, nghttp2-client and redis-tools, installed with apt-get when missing. Prints
tables; writes report.json (every figure), chart.html and the per-call logs under --out.`;

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    quantity: { type: 'string', default: '10000' },
    users: { type: 'string', default: '30000' },
    requests: { type: 'string', default: '30000' },
    connections: { type: 'string', default: '256' },
    protocol: { type: 'string', default: 'both' },
    'grpc-client': { type: 'string', default: 'h2load' },
    workers: { type: 'string', default: String(availableParallelism()) },
    'duration-cap': { type: 'string', default: '60' },
    warmup: { type: 'string', default: '3000' },
    'log-level': { type: 'string', default: 'info' },
    'log-format': { type: 'string', default: 'json' },
    compare: { type: 'string' },
    redis: { type: 'string', default: 'stack' },
    backlog: { type: 'string', default: process.env.BENCH_BACKLOG ?? '100000' },
    rebuild: { type: 'boolean', default: false },
    'rebuild-users': { type: 'string', default: process.env.BENCH_REBUILD_USERS ?? '1000000' },
    keep: { type: 'boolean', default: false },
    out: { type: 'string', default: join(root, 'bench', 'results') },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

function fail(msg: string): never {
  console.error(`[bench] ${msg}`);
  process.exit(2);
}

if (o.help) { console.log(HELP); process.exit(0); }
const section = positionals[0];
if (positionals.length > 1 || (section && !['gate', 'issuer', 'rebuild', 'sold-out'].includes(section))) fail(`unknown section ${positionals.join(' ')}; see npm run bench -- --help`);
const count = (name: string, v: string, min = 1) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be a whole number ≥ ${min}, not ${JSON.stringify(v)}`);
  return n;
};
const protocols: Protocol[] = o.protocol === 'both' ? ['connect-h1', 'grpc-h2c'] : o.protocol === 'connect-h1' || o.protocol === 'grpc-h2c' ? [o.protocol] : fail(`--protocol must be connect-h1, grpc-h2c or both, not ${o.protocol}`);
const grpcClient: GrpcClient = o['grpc-client'] === 'h2load' || o['grpc-client'] === 'node' ? o['grpc-client'] : fail(`--grpc-client must be h2load or node, not ${o['grpc-client']}`);
const logFormatArg = o['log-format'];
const logFormat: LogFormat = logFormatArg === 'json' || logFormatArg === 'pretty' ? logFormatArg : fail(`--log-format must be json or pretty, not ${logFormatArg}`);
const ownRedis = o.redis === 'own' ? true : o.redis === 'stack' ? false : fail(`--redis must be stack or own, not ${o.redis}`);
if (o.compare !== undefined && section && section !== 'gate') fail(`--compare runs the gate section on another commit's code; it does not apply to ${section}`);
if (section === 'sold-out') {
  const { soldOutBench } = await import('./sold-out.ts');
  // Its own scale unless told: a sale of 1,000 units, then 20,000 refusals.
  await soldOutBench({
    quantity: count('quantity', o.quantity === '10000' ? '1000' : o.quantity),
    refusals: count('requests', o.requests === '30000' ? '20000' : o.requests),
    workers: count('workers', o.workers),
    concurrency: count('connections', o.connections),
    loadConnections: count('connections', o.connections),
  });
  process.exit(0);
}
const requests = count('requests', o.requests);
const settingsBase = {
  quantity: count('quantity', o.quantity),
  users: count('users', o.users),
  requests,
  connections: Math.min(count('connections', o.connections), requests),
  protocols,
  workers: count('workers', o.workers),
  durationCapS: count('duration-cap', o['duration-cap']),
  warmup: count('warmup', o.warmup, 0),
  grpcClient,
  logLevel: o['log-level'],
  logFormat,
};
if (settingsBase.quantity > 10_000_000) fail('--quantity is at most 10,000,000 (the coupons table\'s limit)');
const runGate = !section || section === 'gate';
const runIssuer = !section || section === 'issuer';
const runRebuild = section === 'rebuild' || (!section && o.rebuild);

// The stack, checked first: a clear message beats a timeout deep inside a run.
function portOpen(hostPort: string): Promise<boolean> {
  const [host, port] = hostPort.split(':');
  return new Promise((resolve) => {
    const s = createConnection({ host, port: Number(port) });
    s.setTimeout(1_500);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('timeout', () => { s.destroy(); resolve(false); });
    s.once('error', () => resolve(false));
  });
}
async function preflight(db: ReturnType<typeof newDb>, redis: ReturnType<typeof newRedis>) {
  const down: string[] = [];
  if (!(await Promise.all(config.KAFKA_BROKERS.map(portOpen))).every(Boolean)) down.push(`Kafka (${config.KAFKA_BROKERS.join(', ')})`);
  try {
    const res = await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects`, { signal: AbortSignal.timeout(3_000) });
    if (!res.ok) down.push(`the schema registry (${config.SCHEMA_REGISTRY_URL}: HTTP ${res.status})`);
  } catch { down.push(`the schema registry (${config.SCHEMA_REGISTRY_URL})`); }
  try { await db.raw('SELECT 1'); } catch { down.push(`PostgreSQL (${config.DATABASE_URL.replace(/\/\/[^@]*@/, '//')})`); }
  try { await Promise.race([redis.ping(), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 3_000))]); } catch { down.push(`Redis (${config.REDIS_URL})`); }
  if (down.length) {
    fail(`not reachable: ${down.join('; ')}.\n  Start the local stack with \`npm run stack:up\` (or \`npm start\`, which starts it too), check it with \`npm run stack:status\`, then run the bench again.\n  PostgreSQL and Redis are used as found: stack:up only checks them.`);
  }
}

const startedAt = new Date();
const db = newDb();
const stackRedis = newRedis();
stackRedis.on('error', () => { /* reported by the preflight */ });
await preflight(db, stackRedis);
let own: OwnRedis | undefined;
let redis = stackRedis;
if (ownRedis) {
  // The stack's settings (no persistence, noeviction), on a port of its own.
  own = await startOwnRedis(['--maxmemory-policy', 'noeviction']);
  redis = new Redis(own.url);
  stackRedis.disconnect();
}
const redisUrl = own?.url ?? config.REDIS_URL;
const outDir = join(o.out, startedAt.toISOString().replace(/[:.]/g, '-'));
const logDir = join(outDir, 'logs');
mkdirSync(logDir, { recursive: true });
const env: Record<string, string> = { ...uniqueEnv('bench'), ...(own ? { REDIS_URL: own.url } : {}) };
let compared: ComparedCode | undefined;
const admin = kafka().admin();
/** Other benches, tests and chaos runs on this machine: they take CPU from the figures. */
const othersRunning = () => listProcs().filter((p) => /chaos\/run\.ts|vitest|bench\/run\.ts/.test(p.args) && p.pid !== process.pid && p.pid !== process.ppid).map((p) => `${p.pid} ${p.args.slice(0, 80)}`);
const others = othersRunning();
const report: FullReport = {
  startedAt: startedAt.toISOString(),
  machine: { cores: availableParallelism(), loadAverageAtStart: loadavg(), otherBenchOrTestRunning: others, otherBenchOrTestRunningAtEnd: [] },
  command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
  targets: [],
  files: {},
};
const created: string[] = [];

try {
  await admin.connect();
  if (others.length) progress.say(`[bench] note: also running on this machine (figures will be lower): ${others.join('; ')}`);
  let rebuild: RebuildReport | undefined;
  let gate: GateReport | undefined;
  let issuer: IssuerReport | undefined;
  if (runRebuild) {
    rebuild = await rebuildBench(db, count('rebuild-users', o['rebuild-users']));
    const { lines, ...rest } = rebuild;
    report.rebuild = rest;
    console.log(`${lines.join('\n')}\n`);
  }
  if (runGate) {
    const settings: GateSettings = { ...settingsBase, outDir: join(outDir, 'runs') };
    const self: Code = { ...thisCheckout(env, db), created };
    if (o.compare !== undefined) {
      progress.say(`[bench] --compare ${o.compare}: a worktree of it and a ledger database of its own …`);
      compared = await prepareCompare(o.compare, db);
      if (own) compared.env.REDIS_URL = own.url;
      progress.say(`[bench] ${o.compare} is ${compared.commit}, checked out in ${compared.root}, ledger ${compared.database}`);
    }
    gate = await gateBench(settings, { redis, redisUrl, ownRedis, admin, logDir, codes: compared ? [self, compared] : [self] });
    report.gate = gate;
    report.ratios = ratiosOf(gate);
    console.log(`${renderGate(gate, report.ratios)}\n`);
    if (gate.compare) console.log(`${renderCompare(gate)}\n`);
    const chart = join(outDir, 'chart.html');
    writeFileSync(chart, chartHtml(gate, `npm run bench: gate, ${startedAt.toISOString()}`));
    report.files.chart = chart;
  }
  if (runIssuer) {
    issuer = await issuerBench({ backlog: count('backlog', o.backlog), logLevel: settingsBase.logLevel, logFormat, env, redisUrl, logDir, db });
    created.push(issuer.couponId);
    report.issuer = issuer;
    if (gate) (report.ratios ??= {})['issuer rows/s (backlog) / PostgreSQL bulk insert'] = issuer.rowsPerSec / gate.ceilings.insert.rowsPerSec;
    console.log(`${renderIssuer(issuer, gate?.ceilings.insert.rowsPerSec)}\n`);
  }
  report.targets = targetsOf(gate, issuer);
  if (report.targets.length) console.log(`${renderTargets(report.targets)}\n`);
  report.machine.otherBenchOrTestRunningAtEnd = othersRunning();
  const meanwhile = [...new Set([...others, ...report.machine.otherBenchOrTestRunningAtEnd])];
  if (meanwhile.length) console.log(`Meanwhile on this machine (at start or end): ${meanwhile.join('; ')}\n`);
} finally {
  progress.clear();
  report.files.report = join(outDir, 'report.json');
  report.files.logs = logDir;
  writeFileSync(report.files.report, `${JSON.stringify(report, null, 1)}\n`);
  console.log(`results: ${relative(process.cwd(), outDir) || outDir}/ (report.json${report.files.chart ? ', chart.html' : ''}, logs/, runs/)`);
  if (!o.keep) {
    await cleanup(env.KAFKA_TOPIC_PREFIX!, created).catch((err: unknown) => console.error(`[bench] cleanup: ${(err as Error).message}`));
    if (compared) await cleanup(compared.env.KAFKA_TOPIC_PREFIX!, compared.created).catch((err: unknown) => console.error(`[bench] cleanup of ${o.compare}'s run: ${(err as Error).message}`));
  }
  if (compared) {
    for (const note of await compared.dispose({ keep: o.keep, adminDb: db }).catch((err: unknown) => [`cleanup of ${o.compare}: ${(err as Error).message}`])) console.log(`[bench] ${note}`);
  }
  await admin.disconnect().catch(() => undefined);
  redis.disconnect();
  stackRedis.disconnect();
  await own?.stop();
  await db.destroy();
}

/**
 * The bench's coupons (Redis keys; in this checkout's ledger, their rows: a --compare ref's
 * database is dropped as a whole), the topics under `prefix` and their schema subjects.
 */
async function cleanup(prefix: string, coupons: string[]) {
  const ledger = coupons === created;
  for (const id of coupons) {
    await redis.del(...allCouponKeys(id));
    if (!ledger) continue;
    await db('user_coupons').where({ coupon_id: id }).delete();
    await db('coupons').where({ id }).delete();
  }
  await redis.del(activeCouponsKey(prefix), legacyCouponIndexKey(prefix));
  const existing = new Set(await admin.listTopics());
  const topics = Object.values(topicNames(prefix)).filter((t) => existing.has(t));
  if (topics.length) await admin.deleteTopics({ topics, timeout: 10_000 });
  const res = await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects`, { signal: AbortSignal.timeout(3_000) });
  const subjects = res.ok ? ((await res.json()) as string[]).filter((s) => s.startsWith(prefix)) : [];
  for (const s of subjects) {
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${s}`, { method: 'DELETE' });
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${s}?permanent=true`, { method: 'DELETE' });
  }
}
