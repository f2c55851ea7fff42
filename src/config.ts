// Every setting comes from an environment variable, with defaults for the local stack (README,
// "Configuration"). Validation happens once at start; an error names the variable and the problem.
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

const fields = z.object({
  API_HOST: z.string().min(1).default('127.0.0.1'),
  API_PORT: int(0, 65535).default(8080),
  /** Prometheus /metrics of coupon-api and of coupon-issuer, both on API_HOST (0 picks a free port). */
  API_METRICS_PORT: int(0, 65535).default(9464),
  ISSUER_METRICS_PORT: int(0, 65535).default(9465),
  /** node:cluster worker processes of coupon-api, sharing API_PORT; 1 runs a single process, no cluster. */
  API_WORKERS: int(1, 64).default(Math.min(64, availableParallelism())),
  API_MAX_MESSAGE_BYTES: int(1024, 64 * 1024 * 1024).default(64 * 1024),
  API_SHUTDOWN_GRACE_MS: int(0, 600_000).default(10_000),
  // Hostile connections (README, "Connections: timeouts and limits").
  API_FIRST_BYTE_TIMEOUT_MS: int(100, 600_000).default(5_000),
  API_HEADERS_TIMEOUT_MS: int(100, 600_000).default(10_000),
  API_REQUEST_TIMEOUT_MS: int(100, 3_600_000).default(30_000),
  API_IDLE_TIMEOUT_MS: int(100, 3_600_000).default(65_000),
  API_MAX_CONNECTIONS: int(1, 1_000_000).default(10_000),
  /** Listening sockets per process on API_PORT (SO_REUSEPORT): how many new connections one event-loop turn can accept. */
  API_ACCEPT_SOCKETS: int(1, 256).default(64),
  API_MAX_CONCURRENT_STREAMS: int(1, 100_000).default(128),
  API_MAX_SESSION_MEMORY_MB: int(1, 4_096).default(10),
  KAFKA_BROKERS: z.string().min(1).default('127.0.0.1:9092')
    .transform((s) => s.split(',').map((b) => b.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^[^:\s]+:\d{1,5}$/, 'each broker must be host:port')).min(1)),
  KAFKA_CLIENT_ID: z.string().min(1).default('coupon'),
  KAFKA_TOPIC_PREFIX: z.string().regex(/^[a-zA-Z0-9._-]{0,100}$/, 'letters, digits, ".", "_" and "-" only').default(''),
  KAFKA_TOPIC_PARTITIONS: int(1, 1024).default(4),
  KAFKA_REPLICATION_FACTOR: int(1, 16).default(1),
  /** min.insync.replicas of the topics the services create; unset: min(2, KAFKA_REPLICATION_FACTOR). */
  KAFKA_MIN_INSYNC_REPLICAS: int(1, 16).optional(),
  KAFKA_ISSUER_GROUP: z.string().min(1).default('coupon-issuer'),
  KAFKA_REDEMPTION_GROUP: z.string().min(1).default('coupon-redemption'),
  PUBLISH_LINGER_MS: int(0, 1000).default(2),
  PUBLISH_MAX_BATCH: int(1, 10_000).default(500),
  PUBLISH_TIMEOUT_MS: int(100, 120_000).default(5_000),
  SCHEMA_REGISTRY_URL: url.default('http://127.0.0.1:8081/apis/ccompat/v7'),
  SCHEMA_COMPATIBILITY: z.enum(['BACKWARD', 'BACKWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE']).default('BACKWARD_TRANSITIVE'),
  DATABASE_URL: url.default('postgres://postgres@127.0.0.1:5432/test'),
  DATABASE_POOL_MAX: int(1, 200).default(10),
  REDIS_URL: url.default('redis://127.0.0.1:6379/0'),
  /** Seeds of a Redis Cluster, host:port,…; when set the services use the cluster and REDIS_URL is ignored. */
  REDIS_CLUSTER_NODES: z.string().trim()
    .transform((s) => s.split(',').map((n) => n.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^[^:\s]+:\d{1,5}$/, 'each Redis Cluster node must be host:port (REDIS_URL is ignored when this is set)')).min(1))
    .optional(),
  /**
   * Replicas that must acknowledge a reservation or redemption (Redis WAIT) before its caller hears
   * OK; 0 is off. Unset: 1 with REDIS_CLUSTER_NODES, else 0.
   */
  REDIS_WAIT_REPLICAS: int(0, 16).optional(),
  REDIS_WAIT_TIMEOUT_MS: int(1, 60_000).default(500),
  /** How long a finished coupon's Redis state outlives the last moment it could be issued or redeemed. */
  REDIS_RETENTION: duration(3_650 * 86_400_000).default(7 * 86_400_000),
  RECOVERY_INTERVAL_MS: int(100, 3_600_000).default(5_000),
  RECOVERY_STALE_MS: int(100, 3_600_000).default(30_000),
  ISSUE_MAX_ATTEMPTS: int(1, 100).default(5),
  ISSUE_BACKOFF_MS: int(1, 600_000).default(200),
  ISSUE_BACKOFF_MAX_MS: int(1, 3_600_000).default(10_000),
  ALERT_WEBHOOK_URL: url.optional(),
  RECONCILE_INTERVAL_MS: int(1_000, 86_400_000).default(60_000),
  /** Testing only: makes a process fail at a chosen point, to prove recovery. */
  FAILPOINT: z.enum(['crash-after-reserve', 'stall-after-reserve']).optional(),
  /** PEM files: with both, coupon-api serves TLS on API_PORT (HTTP/2 or HTTP/1.1 by ALPN). */
  API_TLS_CERT: z.string().min(1).optional(),
  API_TLS_KEY: z.string().min(1).optional(),
  /** PEM file of the CA that signs callers' certificates: mutual TLS, callers without one are refused. */
  API_TLS_CLIENT_CA: z.string().min(1).optional(),
  /** jwt: every CouponService call needs a valid bearer token; off: no checks (loopback only). */
  AUTH_MODE: z.enum(['jwt', 'off']).default('jwt'),
  AUTH_JWKS_URL: url.optional(),
  AUTH_JWKS_FILE: z.string().min(1).optional(),
  AUTH_ISSUER: z.string().min(1).default('coupon-local'),
  AUTH_AUDIENCE: z.string().min(1).default('coupon-api'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_PRETTY: bool.default(false),
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
export const redisTarget = (c: Pick<Config, 'REDIS_URL' | 'REDIS_CLUSTER_NODES'>) => ({ url: c.REDIS_URL, clusterNodes: c.REDIS_CLUSTER_NODES });

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
