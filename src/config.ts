// Every setting comes from an environment variable, with defaults for the local stack (README,
// "Configuration"). Validation happens once at start; an error names the variable and the problem.
import { z } from 'zod';

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const url = z.url();

const fields = z.object({
  API_HOST: z.string().min(1).default('127.0.0.1'),
  API_PORT: int(0, 65535).default(8080),
  API_MAX_MESSAGE_BYTES: int(1024, 64 * 1024 * 1024).default(64 * 1024),
  API_SHUTDOWN_GRACE_MS: int(0, 600_000).default(10_000),
  KAFKA_BROKERS: z.string().min(1).default('127.0.0.1:9092')
    .transform((s) => s.split(',').map((b) => b.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^[^:\s]+:\d{1,5}$/, 'each broker must be host:port')).min(1)),
  KAFKA_CLIENT_ID: z.string().min(1).default('coupon'),
  KAFKA_TOPIC_PREFIX: z.string().regex(/^[a-zA-Z0-9._-]{0,100}$/, 'letters, digits, ".", "_" and "-" only').default(''),
  KAFKA_TOPIC_PARTITIONS: int(1, 1024).default(4),
  KAFKA_REPLICATION_FACTOR: int(1, 16).default(1),
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
  RECOVERY_INTERVAL_MS: int(100, 3_600_000).default(5_000),
  RECOVERY_STALE_MS: int(100, 3_600_000).default(30_000),
  ISSUE_MAX_ATTEMPTS: int(1, 100).default(5),
  ISSUE_BACKOFF_MS: int(1, 600_000).default(200),
  ISSUE_BACKOFF_MAX_MS: int(1, 3_600_000).default(10_000),
  ALERT_WEBHOOK_URL: url.optional(),
  METRICS_PORT: int(0, 65535).optional(),
  /** Testing only: makes a process fail at a chosen point, to prove recovery. */
  FAILPOINT: z.enum(['crash-after-reserve']).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_PRETTY: bool.default(false),
});

// A reservation is "stale" only once its own publish has certainly given up.
const schema = fields.superRefine((c, ctx) => {
  if (c.RECOVERY_STALE_MS <= c.PUBLISH_TIMEOUT_MS) {
    ctx.addIssue({
      code: 'custom',
      path: ['RECOVERY_STALE_MS'],
      message: `is ${c.RECOVERY_STALE_MS} ms and must be greater than PUBLISH_TIMEOUT_MS (${c.PUBLISH_TIMEOUT_MS} ms), or reservations still being published would be republished`,
    });
  }
});

export type Config = z.infer<typeof schema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
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
