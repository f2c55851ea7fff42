// The typed loader of the project's Redis Lua scripts (src/store/lua/*.lua): each script's file, the
// libraries in front of it, and its KEYS, declared once in SCRIPTS below. Scripts are loaded with
// ioredis defineCommand (EVALSHA, falling back to EVAL once per connection). What the scripts mean,
// their arguments and their answers belong to the features that call them: gate/gate-scripts.ts,
// issuer/issuer-scripts.ts, redemption/redemption-scripts.ts, store/loss-guard.ts and
// store/active-coupons.ts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from './redis.ts';
import type { ActiveCoupons } from './active-coupons.ts';
import { couponKeys, loadTokenKey, lossKeys, retainedCouponKeys, stagedFreeKey, type RebuiltState } from './keys.ts';

export const luaScript = (name: string) => readFileSync(join(import.meta.dirname, 'lua', `${name}.lua`), 'utf8');
// Scripts that share helpers get lib/<name>.lua files in front of their own text (one script per
// call, so Redis still runs each as one atomic unit).
const withLibs = (libs: readonly string[], body: string) => [...libs.map((lib) => luaScript(`lib/${lib}`)), body].join('\n');

type CouponKeyName = keyof ReturnType<typeof couponKeys>;
/** KEYS of a script that takes only named keys of one coupon, in this order. */
const coupon = (...names: CouponKeyName[]) => (couponId: string) => {
  const k = couponKeys(couponId);
  return names.map((name) => k[name]);
};

/** What a load (gate-load.lua, restore-redemption.lua) is called on: the coupon and the load's own token. */
export interface LoadTarget { couponId: string; token: string }

/**
 * Every script, with its KEYS in the order the script reads them (each .lua file lists them at its
 * top). The list is the one source of a script's key count: a call passes exactly the keys built
 * here, and their number, to EVALSHA.
 */
const SCRIPTS = {
  gateLoad: {
    file: 'gate-load', libs: ['expiry'],
    keys: ({ couponId, token }: LoadTarget) => [
      ...coupon('meta', 'winners', 'next', 'issued', 'free')(couponId),
      stagedFreeKey(couponId, token), loadTokenKey(couponId, 'gate', token),
      ...coupon('rebuildAfter')(couponId), ...retainedCouponKeys(couponId),
    ],
  },
  gateReserve: { file: 'gate-reserve', libs: ['expiry'], keys: coupon('meta', 'winners', 'next', 'free', 'pending', 'issued', 'redeem') },
  gateConfirm: { file: 'gate-confirm', libs: [], keys: coupon('pending', 'winners') },
  gateStale: { file: 'gate-stale', libs: [], keys: coupon('pending', 'winners') },
  gateRelease: { file: 'gate-release', libs: ['expiry'], keys: coupon('winners', 'free', 'pending', 'released', 'claimed', 'meta') },
  gateSoldOut: { file: 'gate-sold-out', libs: [], keys: coupon('meta', 'winners', 'pending') },
  gateChange: {
    file: 'gate-change', libs: [],
    keys: (couponId: string) => [...coupon('meta', 'winners', 'next')(couponId), ...retainedCouponKeys(couponId)],
  },
  issuerClaim: { file: 'issuer-claim', libs: ['expiry'], keys: coupon('meta', 'winners', 'released', 'claimed') },
  issuerMarkIssued: {
    file: 'issuer-mark-issued', libs: ['expiry'],
    keys: (couponId: string) => [...coupon('issued', 'winners', 'meta')(couponId), ...retainedCouponKeys(couponId)],
  },
  redeem: { file: 'redeem', libs: ['expiry', 'redemption'], keys: coupon('meta', 'winners', 'issued', 'redeem', 'cancelled', 'outbox', 'redeemLoaded') },
  cancelRedemption: { file: 'cancel-redemption', libs: ['expiry', 'redemption'], keys: coupon('meta', 'winners', 'issued', 'redeem', 'cancelled', 'outbox', 'redeemLoaded') },
  restoreRedemption: {
    file: 'restore-redemption', libs: ['expiry'],
    keys: ({ couponId, token }: LoadTarget) => [
      ...coupon('winners', 'issued', 'redeem', 'cancelled', 'redeemLoaded', 'meta')(couponId),
      loadTokenKey(couponId, 'redemption', token), ...coupon('redeemLoadAfter')(couponId),
    ],
  },
  lossNoticed: {
    file: 'loss-noticed', libs: [],
    keys: ({ couponId, state }: { couponId: string; state: RebuiltState }) => {
      const k = lossKeys(couponId, state);
      return [k.present, k.marker];
    },
  },
  activePrune: { file: 'active-prune', libs: [], keys: (indexKey: string) => [indexKey] },
} as const satisfies Record<string, { file: string; libs: readonly string[]; keys: (target: never) => string[] }>;

type Scripts = typeof SCRIPTS;
export type ScriptName = keyof Scripts;
/** What a script's KEYS are built from: a coupon id for most, more for some (see SCRIPTS). */
export type KeyTarget<N extends ScriptName> = Parameters<Scripts[N]['keys']>[0];
export type ScriptArg = string | number;

/** The script's text as Redis runs it: its libraries, then its own file. */
export const scriptSource = (name: ScriptName): string => withLibs(SCRIPTS[name].libs, luaScript(SCRIPTS[name].file));

/** The KEYS one call of the script takes. */
export const scriptKeys = <N extends ScriptName>(name: N, target: KeyTarget<N>): string[] =>
  (SCRIPTS[name].keys as (t: KeyTarget<N>) => string[])(target);

// Each script is defined with its key count (SCRIPTS is the one source: the count of the keys it
// builds), so ioredis passes the keys first and a Cluster client's auto-pipelining routes a call by
// its first key. Without a fixed count the count itself came first, so every script call was
// grouped under the slot of a number, with other coupons' calls on other shards: their batch failed
// with "All keys in the pipeline should belong to the same slots allocation group"
// (test/cluster/redis-cluster.test.ts saw users answered UNAVAILABLE for 100 s). All are defined
// before the first call: an auto-pipeline takes the client's commands when it is created.
const KEY_COUNTS = new Map<ScriptName, number>();
{
  // Any target builds the same number of keys; this one has every field a target may have.
  const sample = { couponId: 'sample', token: 'sample', state: 'gate' } as never;
  for (const name of Object.keys(SCRIPTS) as ScriptName[]) KEY_COUNTS.set(name, SCRIPTS[name].keys(sample).length);
}

const defined = new WeakSet<Redis>();

/** Defines every script on the client, once per client, each with its key count. */
export function defineScripts(redis: Redis): void {
  if (defined.has(redis)) return;
  for (const [name, numberOfKeys] of KEY_COUNTS) redis.defineCommand(name, { lua: scriptSource(name), numberOfKeys });
  defined.add(redis);
}

type Call = (...args: ScriptArg[]) => Promise<unknown>;

/**
 * A script call the Redis client did not settle in time. The command timeout
 * (REDIS_COMMAND_TIMEOUT_MS) ends a command sent to a node; a Cluster client can also hold a command
 * before it reaches any node (waiting for a slot map, or between redirections during a failover),
 * where no command timeout runs. This bounds the whole call, so a caller answers UNAVAILABLE instead
 * of waiting for ever. An outage (domain/outage.ts); the script may still run later, like any
 * command that timed out.
 */
export class RedisCallUnsettled extends Error {
  override name = 'RedisCallUnsettled';
}

/** The bound of one script call: four command timeouts, at least 10 s (a failover's redirections fit in it). */
export function scriptDeadlineMs(redis: Redis): number {
  const options = redis.options as { commandTimeout?: number; redisOptions?: { commandTimeout?: number } };
  return Math.max(10_000, 4 * (options.commandTimeout ?? options.redisOptions?.commandTimeout ?? 0));
}

/** Runs one script: EVALSHA with the script's KEYS built for `target`, then `args` as ARGV, bounded by scriptDeadlineMs. */
export function runScript<N extends ScriptName>(redis: Redis, name: N, target: KeyTarget<N>, args: readonly ScriptArg[]): Promise<unknown> {
  defineScripts(redis);
  const keys = scriptKeys(name, target);
  if (keys.length !== KEY_COUNTS.get(name)) throw new Error(`Redis script ${name} is defined with ${KEY_COUNTS.get(name)} keys and was called with ${keys.length}`);
  const fn = (redis as unknown as Record<string, Call>)[name];
  if (!fn) throw new Error(`Redis script ${name} is not defined`);
  const call = fn.call(redis, ...keys, ...args);
  const ms = scriptDeadlineMs(redis);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RedisCallUnsettled(`Redis did not settle the ${name} script within ${ms} ms`)), ms);
  });
  return Promise.race([call, deadline]).finally(() => clearTimeout(timer));
}

// Script calls that take many rows are split: a call's arguments are spread on the JS stack, and
// one long script would block Redis for every other caller while it runs. No script call carries
// more than CHUNK items (rows, seqs or records).
export const CHUNK = 1_000;
export function* chunks<T>(items: readonly T[]): Generator<T[]> {
  for (let i = 0; i < items.length; i += CHUNK) yield items.slice(i, i + CHUNK);
}

export interface CouponScriptsOptions {
  /** Marked before each script that can add a pending reservation or an outbox entry. */
  active?: ActiveCoupons;
  /** REDIS_RETENTION in ms (default 7 days). */
  retentionMs?: number;
}

/**
 * The scripts on one Redis client, with what the features' calls of them share: the index of
 * active coupons they mark first (store/active-coupons.ts) and REDIS_RETENTION.
 */
export class CouponScripts {
  private readonly redis: Redis;
  readonly active: ActiveCoupons | undefined;
  readonly retentionMs: number;
  constructor(redis: Redis, options: CouponScriptsOptions = {}) {
    this.redis = redis;
    this.active = options.active;
    this.retentionMs = options.retentionMs ?? 7 * 86_400_000;
    defineScripts(redis);
  }

  run<N extends ScriptName>(name: N, target: KeyTarget<N>, args: readonly ScriptArg[]): Promise<unknown> {
    return runScript(this.redis, name, target, args);
  }
}
