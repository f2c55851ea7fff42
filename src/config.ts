// Every setting comes from an environment variable, with defaults for the local stack (docs/configuration.md,
// generated from this file). Validation happens once at start; an error names the variable and the problem.
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { z } from 'zod';

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const url = z.url();

// A duration: a number with a unit (ms, s, m, h, d), or a bare number of seconds. Parsed to ms.
const DURATION_UNITS_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const duration = (maxMs: number) => z.string().trim()
  .regex(/^\d+(\.\d+)?(ms|s|m|h|d)?$/, 'must be a duration such as 7d, 12h, 30m, 45s or 500ms (a bare number is seconds)')
  .transform((v) => {
    const [, amount, unit] = /^([\d.]+)([a-z]*)$/.exec(v)!;
    return Math.round(Number(amount) * DURATION_UNITS_MS[(unit || 's') as keyof typeof DURATION_UNITS_MS]);
  })
  .pipe(z.number().int().min(0).max(maxMs, `must be at most ${maxMs / 86_400_000} days`));

export const fields = z.object({
  API_HOST: z.string().min(1).default('127.0.0.1')
    .describe('Interface coupon-api binds (RPCs and /metrics), and coupon-issuer binds for its /metrics. AUTH_MODE=off needs a loopback address here.'),
  API_PORT: int(0, 65535).default(8080)
    .describe('Port for gRPC, gRPC-Web and Connect. 0 picks a free port below the kernel\'s ephemeral range, so no outgoing connection takes it before every worker binds it.'),
  /** Prometheus /metrics of coupon-api and of coupon-issuer, both on API_HOST (0 picks a free port). */
  API_METRICS_PORT: int(0, 65535).default(9464)
    .describe('coupon-api\'s Prometheus /metrics, on API_HOST (0 picks a free port). Must differ from API_PORT and ISSUER_METRICS_PORT.'),
  ISSUER_METRICS_PORT: int(0, 65535).default(9465)
    .describe('coupon-issuer\'s Prometheus /metrics, on API_HOST (0 picks a free port).'),
  /** node:cluster worker processes of coupon-api, sharing API_PORT; 1 runs a single process, no cluster. */
  API_WORKERS: int(1, 64).default(Math.min(64, availableParallelism()))
    .meta({ description: 'coupon-api worker processes sharing API_PORT (node:cluster). 1 runs one process, no cluster.', defaultText: 'os.availableParallelism(), at most 64' }),
  API_MAX_MESSAGE_BYTES: int(1024, 64 * 1024 * 1024).default(64 * 1024)
    .describe('Largest request message, also after decompression; a larger one answers RESOURCE_EXHAUSTED (REQUEST_TOO_LARGE).'),
  API_SHORT_PATH: bool.default(true)
    .describe('IssueCoupon over Connect with a JSON body, and over gRPC with a protobuf body, takes a short path past connect-es\'s generic handling (same interceptors, implementation and answers; src/server/short-path.ts); anything unusual still goes through connect-es. Off while tracing is on. false: every call goes through connect-es.'),
  API_SHUTDOWN_GRACE_MS: int(0, 600_000).default(10_000)
    .describe('How long SIGTERM waits for in-flight calls before closing connections.'),
  // Hostile connections (docs/api.md#connections-timeouts-and-limits).
  API_FIRST_BYTE_TIMEOUT_MS: int(100, 600_000).default(5_000)
    .describe('A new connection must show its protocol (a first byte, the whole HTTP/2 preface, or the TLS handshake) within this, or it is closed.'),
  API_HEADERS_TIMEOUT_MS: int(100, 600_000).default(10_000)
    .describe('HTTP/1.1: time to receive a request\'s headers (slowloris). At most API_REQUEST_TIMEOUT_MS.'),
  API_REQUEST_TIMEOUT_MS: int(100, 3_600_000).default(30_000)
    .describe('HTTP/1.1: time to receive a whole request, body included.'),
  API_IDLE_TIMEOUT_MS: int(100, 3_600_000).default(65_000)
    .describe('An idle HTTP/1.1 keep-alive connection, or an HTTP/2 session with no open stream, is closed after this. Keep it above the load balancer\'s idle timeout.'),
  API_MAX_CONNECTIONS: int(1, 1_000_000).default(10_000)
    .describe('Open connections at most, per worker; extra connections are closed as soon as they are accepted. Keep it under the open-file limit.'),
  /** Listening sockets per process on API_PORT (SO_REUSEPORT): how many new connections one event-loop turn can accept. */
  API_ACCEPT_SOCKETS: int(1, 256).default(64)
    .describe('Listening sockets per process (worker) on API_PORT, with SO_REUSEPORT: how many new connections one busy event-loop turn can accept.'),
  API_MAX_CONCURRENT_STREAMS: int(1, 100_000).default(128)
    .describe('HTTP/2 streams one connection may have open at once.'),
  API_MAX_SESSION_MEMORY_MB: int(1, 4_096).default(10)
    .describe('HTTP/2 memory one connection may use before new streams are refused.'),
  KAFKA_BROKERS: z.string().min(1).default('127.0.0.1:9092')
    .transform((s) => s.split(',').map((b) => b.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^[^:\s]+:\d{1,5}$/, 'each broker must be host:port')).min(1))
    .describe('Kafka bootstrap brokers, a comma-separated host:port list.'),
  KAFKA_CLIENT_ID: z.string().min(1).default('coupon')
    .describe('Kafka client id prefix.'),
  KAFKA_TOPIC_PREFIX: z.string().regex(/^[a-zA-Z0-9._-]{0,100}$/, 'letters, digits, ".", "_" and "-" only').default('')
    .describe('Prefix for every topic name, and so every registry subject, so several environments can share one cluster. Letters, digits, ".", "_" and "-".'),
  KAFKA_TOPIC_PARTITIONS: int(1, 1024).default(4)
    .describe('Partitions of the topics the services create. coupon-issuer scales to one instance per partition.'),
  KAFKA_REPLICATION_FACTOR: int(1, 16).default(1)
    .describe('Replication factor of the topics the services create; 3 in production.'),
  /** min.insync.replicas of the topics the services create; unset: min(2, KAFKA_REPLICATION_FACTOR). */
  KAFKA_MIN_INSYNC_REPLICAS: int(1, 16).optional()
    .describe('min.insync.replicas of the topics the services create. Unset: min(2, KAFKA_REPLICATION_FACTOR). At most KAFKA_REPLICATION_FACTOR.'),
  KAFKA_ISSUER_GROUP: z.string().min(1).default('coupon-issuer')
    .describe('Consumer group of coupon-issuer on the issue topic.'),
  KAFKA_REDEMPTION_GROUP: z.string().min(1).default('coupon-redemption')
    .describe('Consumer group of the redemption ledger; the payment-result consumer uses "<group>.payment-result".'),
  PUBLISH_LINGER_MS: int(0, 1000).default(2)
    .describe('How long the producers wait to fill a batch of records.'),
  PUBLISH_MAX_BATCH: int(1, 10_000).default(500)
    .describe('Records per Produce request at most.'),
  PUBLISH_TIMEOUT_MS: int(100, 120_000).default(5_000)
    .describe('How long IssueCoupon (and a redemption) waits for the broker\'s ack before answering UNAVAILABLE (PUBLISH_FAILED). Nothing of a record is written to Kafka later than this after its request; a rebuild after a Redis loss waits this + 2 s.'),
  SCHEMA_REGISTRY_URL: url.default('http://127.0.0.1:8081/apis/ccompat/v7')
    .describe('Confluent-compatible schema registry API.'),
  SCHEMA_COMPATIBILITY: z.enum(['BACKWARD', 'BACKWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE']).default('BACKWARD_TRANSITIVE')
    .describe('Compatibility level each producer sets on its subject before registering its schema.'),
  DATABASE_URL: url.default('postgres://postgres@127.0.0.1:5432/test')
    .describe('PostgreSQL, the ledger of record.'),
  DATABASE_POOL_MAX: int(1, 200).default(10)
    .describe('PostgreSQL connections per process (per coupon-api worker).'),
  REDIS_URL: url.default('redis://127.0.0.1:6379/0')
    .describe('Redis, the gate\'s live state. Ignored when REDIS_CLUSTER_NODES is set.'),
  /** Seeds of a Redis Cluster, host:port,…; when set the services use the cluster and REDIS_URL is ignored. */
  REDIS_CLUSTER_NODES: z.string().trim()
    .transform((s) => s.split(',').map((n) => n.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^[^:\s]+:\d{1,5}$/, 'each Redis Cluster node must be host:port (REDIS_URL is ignored when this is set)')).min(1))
    .optional()
    .describe('Seed nodes of a Redis Cluster, host:port,… (the rest are discovered). When set, both services use the cluster and REDIS_URL is ignored.'),
  /**
   * Replicas that must acknowledge a reservation or redemption (Redis WAIT) before its caller hears
   * OK; 0 is off. Unset: 1 with REDIS_CLUSTER_NODES, else 0.
   */
  REDIS_WAIT_REPLICAS: int(0, 16).optional()
    .describe('Redis replicas that must acknowledge (WAIT) a reservation, redemption or cancel before its caller hears OK, and a claim before the issuer writes the ledger; 0 is off. Unset: 1 with REDIS_CLUSTER_NODES, else 0.'),
  REDIS_WAIT_TIMEOUT_MS: int(1, 60_000).default(500)
    .describe('How long one WAIT may block; fewer replicas by then answers UNAVAILABLE (BACKEND_UNAVAILABLE).'),
  REDIS_COMMAND_TIMEOUT_MS: int(100, 600_000).default(2_000)
    .describe('How long any Redis command may go unanswered before it fails as an outage (ioredis commandTimeout): a Redis that silently drops packets answers UNAVAILABLE and makes the issuer retry (and alert) within seconds, instead of hanging until TCP gives up. REDIS_WAIT_TIMEOUT_MS must be below it.'),
  /** How long a finished coupon's Redis state outlives the last moment it could be issued or redeemed. */
  REDIS_RETENTION: duration(3_650 * 86_400_000).default(7 * 86_400_000)
    .meta({ description: 'How long a finished coupon\'s Redis state outlives the moment it can no longer be issued or redeemed. A duration with a unit (ms, s, m, h, d); a bare number is seconds; at most 3650 days.', defaultText: '7d' }),
  GATE_LOCAL_SOLD_OUT: bool.default(true)
    .describe('The in-process sold-out view: once a coupon is sold out and no publish is in flight, each coupon-api process refuses users who are certainly not winners (a Bloom filter of the winners) without Redis. false: every IssueCoupon goes to Redis.'),
  GATE_LOCAL_RECHECK_MS: int(10, 60_000).default(100)
    .describe('How old a sold-out view\'s last check of the gate\'s epoch may be before a call starts another and waits for it (unless the last check failed): a rebuild, an expiry or an operator change is noticed within this (plus one Redis round trip) of it, however few calls come.'),
  GATE_LOCAL_LIFETIME_MS: int(10, 3_600_000).default(5_000)
    .describe('How long after its last successful check a sold-out view still answers; while Redis does not answer the checks, local refusals stop after this. At least GATE_LOCAL_RECHECK_MS.'),
  RECOVERY_INTERVAL_MS: int(100, 3_600_000).default(5_000)
    .describe('How often coupon-api looks for reservations and redemption changes whose publish never finished, and coupon-issuer for issued coupons whose CouponIssued never finished.'),
  RECOVERY_STALE_MS: int(100, 3_600_000).default(30_000)
    .describe('Age after which such a reservation, change or CouponIssued is republished. Must exceed PUBLISH_TIMEOUT_MS.'),
  ISSUE_MAX_ATTEMPTS: int(1, 100).default(5)
    .describe('Attempts a consumer makes at a batch that fails for a reason other than an outage before dead-lettering it. Outages are retried without limit.'),
  ISSUE_BACKOFF_MS: int(1, 600_000).default(200)
    .describe('First retry delay of a consumer\'s batch; it doubles each attempt.'),
  ISSUE_BACKOFF_MAX_MS: int(1, 3_600_000).default(10_000)
    .describe('Longest retry delay of a consumer\'s batch.'),
  ALERT_WEBHOOK_URL: url.optional()
    .describe('When set, every alert (dead letters, a dependency outage and its recovery, a blocked gate rebuild or redemption load) is also POSTed here as JSON. A failing webhook is logged, never fatal.'),
  RECONCILE_INTERVAL_MS: int(1_000, 86_400_000).default(60_000)
    .describe('How often coupon-issuer reconciles the coupons it wrote to in the last 10 minutes (and any still drifting).'),
  /** Testing only: makes a process fail at a chosen point, to prove recovery. */
  FAILPOINT: z.enum(['crash-after-reserve', 'stall-after-reserve', 'lose-release-reply', 'fail-change-after-gate', 'crash-after-ledger-write']).optional()
    .describe('Testing only: crash-after-reserve kills coupon-api between the reservation and its publish; stall-after-reserve pauses there for PUBLISH_TIMEOUT_MS + 0.5 s; lose-release-reply does that and loses the reply of the release that follows (it ran); fail-change-after-gate makes an operator change fail after the gate took it and before the ledger recorded it; crash-after-ledger-write kills coupon-issuer after a batch\'s INSERT committed new rows, before their CouponIssued is published.'),
  /** PEM files: with both, coupon-api serves TLS on API_PORT (HTTP/2 or HTTP/1.1 by ALPN). */
  API_TLS_CERT: z.string().min(1).optional()
    .describe('PEM certificate chain. With API_TLS_KEY, coupon-api serves TLS on API_PORT (HTTP/2 or HTTP/1.1 by ALPN); unset: cleartext.'),
  API_TLS_KEY: z.string().min(1).optional()
    .describe('PEM private key for API_TLS_CERT.'),
  /** PEM file of the CA that signs callers' certificates: mutual TLS, callers without one are refused. */
  API_TLS_CLIENT_CA: z.string().min(1).optional()
    .describe('PEM CA bundle: mutual TLS; a caller without a certificate this CA signed is refused at the handshake. Needs API_TLS_CERT.'),
  /** jwt: every CouponService call needs a valid bearer token; off: no checks (loopback only). */
  AUTH_MODE: z.enum(['jwt', 'off']).default('jwt')
    .describe('jwt: every CouponService call needs a valid bearer token. off: no checks, accepted only when API_HOST is a loopback address.'),
  AUTH_JWKS_URL: url.optional()
    .describe('JWKS of the identity provider that signs callers\' tokens (fetched, cached, refreshed on an unknown kid). With AUTH_MODE=jwt set exactly one of AUTH_JWKS_URL and AUTH_JWKS_FILE.'),
  AUTH_JWKS_FILE: z.string().min(1).optional()
    .describe('The same JWKS from a file. npm start and npm test set .stack/auth/jwks.json when neither is configured.'),
  AUTH_ISSUER: z.string().min(1).default('coupon-local')
    .describe('Required iss of callers\' tokens.'),
  AUTH_AUDIENCE: z.string().min(1).default('coupon-api')
    .describe('Required aud of callers\' tokens.'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info')
    .describe('Lowest level logged.'),
  LOG_PRETTY: bool.default(false)
    .describe('Human-readable logs instead of JSON lines (npm start sets true).'),
});

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;
export const isLoopback = (host: string) => LOOPBACK.test(host);

// Settings that only make sense together.
const schema = fields.superRefine((c, ctx) => {
  // A reservation is "stale" only once its own publish has certainly given up.
  if (c.RECOVERY_STALE_MS <= c.PUBLISH_TIMEOUT_MS) {
    ctx.addIssue({
      code: 'custom',
      path: ['RECOVERY_STALE_MS'],
      message: `is ${c.RECOVERY_STALE_MS} ms and must be greater than PUBLISH_TIMEOUT_MS (${c.PUBLISH_TIMEOUT_MS} ms), or reservations still being published would be republished`,
    });
  }
  // Under `npm start` both processes share these settings, so their ports must differ.
  const ports = [['API_PORT', c.API_PORT], ['API_METRICS_PORT', c.API_METRICS_PORT], ['ISSUER_METRICS_PORT', c.ISSUER_METRICS_PORT]] as const;
  for (const [i, [name, port]] of ports.entries()) {
    const clash = ports.slice(0, i).find(([, other]) => port !== 0 && other === port);
    if (clash) ctx.addIssue({ code: 'custom', path: [name], message: `is ${port}, the same as ${clash[0]}: each port serves one thing` });
  }
  if (c.KAFKA_MIN_INSYNC_REPLICAS !== undefined && c.KAFKA_MIN_INSYNC_REPLICAS > c.KAFKA_REPLICATION_FACTOR) {
    ctx.addIssue({
      code: 'custom',
      path: ['KAFKA_MIN_INSYNC_REPLICAS'],
      message: `is ${c.KAFKA_MIN_INSYNC_REPLICAS} and must not exceed KAFKA_REPLICATION_FACTOR (${c.KAFKA_REPLICATION_FACTOR}), or no acks=all write could succeed`,
    });
  }
  // WAIT blocks its connection for up to its timeout, and the command timeout counts that wait:
  // a WAIT that may outlast it would fail as an outage whenever a replica is merely slow.
  if (c.REDIS_WAIT_TIMEOUT_MS >= c.REDIS_COMMAND_TIMEOUT_MS) {
    ctx.addIssue({
      code: 'custom',
      path: ['REDIS_WAIT_TIMEOUT_MS'],
      message: `is ${c.REDIS_WAIT_TIMEOUT_MS} ms and must be below REDIS_COMMAND_TIMEOUT_MS (${c.REDIS_COMMAND_TIMEOUT_MS} ms), which bounds every Redis command including WAIT`,
    });
  }
  if (c.GATE_LOCAL_LIFETIME_MS < c.GATE_LOCAL_RECHECK_MS) {
    ctx.addIssue({
      code: 'custom',
      path: ['GATE_LOCAL_LIFETIME_MS'],
      message: `is ${c.GATE_LOCAL_LIFETIME_MS} ms and must be at least GATE_LOCAL_RECHECK_MS (${c.GATE_LOCAL_RECHECK_MS} ms), or a view would stop answering before it is checked again`,
    });
  }
  // The headers are part of the request: Node refuses a headers timeout longer than the request timeout.
  if (c.API_HEADERS_TIMEOUT_MS > c.API_REQUEST_TIMEOUT_MS) {
    ctx.addIssue({
      code: 'custom',
      path: ['API_HEADERS_TIMEOUT_MS'],
      message: `is ${c.API_HEADERS_TIMEOUT_MS} ms and must not exceed API_REQUEST_TIMEOUT_MS (${c.API_REQUEST_TIMEOUT_MS} ms)`,
    });
  }
}).transform((c) => ({ ...c, REDIS_WAIT_REPLICAS: c.REDIS_WAIT_REPLICAS ?? (c.REDIS_CLUSTER_NODES ? 1 : 0) }));

export type Config = z.infer<typeof schema>;

/** Where the services find Redis (store/redis.ts createRedis): the cluster, when configured, else REDIS_URL. */
export const redisTarget = (c: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES' | 'REDIS_COMMAND_TIMEOUT_MS'>) => ({ url: c.REDIS_URL, clusterNodes: c.REDIS_CLUSTER_NODES, commandTimeoutMs: c.REDIS_COMMAND_TIMEOUT_MS });

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** coupon-api's own rules on top of the shared ones: how callers authenticate. */
export function checkApiConfig(c: Config): void {
  const problems: string[] = [];
  if (c.AUTH_MODE === 'off' && !isLoopback(c.API_HOST)) {
    problems.push(`  AUTH_MODE=off is allowed only when coupon-api binds a loopback address, and API_HOST is ${c.API_HOST}: use AUTH_MODE=jwt with AUTH_JWKS_URL or AUTH_JWKS_FILE`);
  }
  if (c.AUTH_MODE === 'jwt' && !c.AUTH_JWKS_URL && !c.AUTH_JWKS_FILE) {
    problems.push("  AUTH_MODE=jwt needs AUTH_JWKS_URL or AUTH_JWKS_FILE: the keys that sign callers' tokens (npm start and npm test create a local one under .stack/auth)");
  }
  if (c.AUTH_JWKS_URL && c.AUTH_JWKS_FILE) problems.push('  AUTH_JWKS_URL and AUTH_JWKS_FILE are both set: use one');
  if (Boolean(c.API_TLS_CERT) !== Boolean(c.API_TLS_KEY)) problems.push('  API_TLS_CERT and API_TLS_KEY go together: set both for TLS, or neither');
  if (c.API_TLS_CLIENT_CA && !c.API_TLS_CERT) problems.push('  API_TLS_CLIENT_CA (mutual TLS) needs API_TLS_CERT and API_TLS_KEY');
  for (const name of ['API_TLS_CERT', 'API_TLS_KEY', 'API_TLS_CLIENT_CA', 'AUTH_JWKS_FILE'] as const) {
    const file = c[name];
    if (file && !existsSync(file)) problems.push(`  ${name}=${JSON.stringify(file)}: no such file`);
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n${problems.join('\n')}`);
}

/** Parses and validates settings from `env`; throws ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings count as unset, as they do in most shells' `VAR= cmd`.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = schema.safeParse(present);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((issue) => {
    const name = String(issue.path[0]);
    const value = env[name];
    return `  ${name}=${value === undefined || value === '' ? '(unset, default used)' : JSON.stringify(value)}: ${issue.message}`;
  });
  throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
}
