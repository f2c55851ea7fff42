// Redis: the gate's live state and the issued/redeemed state read by redemption. One Redis
// (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES). Every key of a coupon carries the hash tag
// {<coupon id>} (keys.ts), so every script and pipeline touches one slot and runs on either.
import { Cluster, Redis as SingleRedis } from 'ioredis';

/** The client the services use: one Redis, or a Redis Cluster (every command routed by its first key). */
export type Redis = SingleRedis | Cluster;
export type { SingleRedis, Cluster };

/** Where Redis is: the seeds of a cluster, when set, else one server's URL. */
export interface RedisTarget {
  url: string;
  clusterNodes?: readonly string[] | undefined;
  /** REDIS_COMMAND_TIMEOUT_MS (default 2 s). */
  commandTimeoutMs?: number | undefined;
}

export const DEFAULT_COMMAND_TIMEOUT_MS = 2_000;

/** How often a Cluster client reads the slot map (CLUSTER SLOTS) even without a MOVED it followed. */
export const SLOTS_REFRESH_INTERVAL_MS = 1_000;

export function createRedis(target: RedisTarget | string): Redis {
  const t: RedisTarget = typeof target === 'string' ? { url: target } : target;
  // Commands fail fast while Redis is down, so callers answer UNAVAILABLE instead of hanging. A
  // Redis that is unreachable without refusing (packets silently dropped) keeps the connection
  // open and never answers: only the command timeout ends those commands ("Command timed out",
  // an outage in domain/outage.ts). A timed-out command may still run once the path heals, like
  // any ambiguous write: the gate's pending journal and recovery are built for that.
  const FAIL_FAST = {
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    commandTimeout: t.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
  } as const;
  if (t.clusterNodes && t.clusterNodes.length > 0) {
    return new Cluster(t.clusterNodes.map((node) => {
      const i = node.lastIndexOf(':');
      return { host: node.slice(0, i), port: Number(node.slice(i + 1)) };
    }), {
      enableOfflineQueue: false,
      // The gate reads its own writes (a repeat must see the reservation it just made): never a replica.
      scaleReads: 'master',
      enableAutoPipelining: true,
      // A failover is short (cluster-node-timeout); commands that meet it retry a few times, then fail.
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 100,
      maxRedirections: 8,
      slotsRefreshTimeout: 2_000,
      // The slot map is also read every second. ioredis refreshes it on a MOVED it follows itself,
      // but an auto-pipelined batch whose commands got different answers (MOVED for two slots, or
      // MOVED next to a success) hands each MOVED to its caller and refreshes nothing (its
      // Pipeline.js), so after a failover a stale map could send a shard's calls to a former master
      // until some other command refreshed it.
      slotsRefreshInterval: SLOTS_REFRESH_INTERVAL_MS,
      redisOptions: { ...FAIL_FAST },
    });
  }
  return new SingleRedis(t.url, {
    ...FAIL_FAST,
    enableOfflineQueue: false,
    lazyConnect: false,
    // Under a flash sale thousands of scripts are in flight; auto-pipelining sends those issued in
    // the same tick as one write, instead of one syscall per command.
    enableAutoPipelining: true,
  });
}

export const isCluster = (redis: Redis): redis is Cluster => redis instanceof Cluster;

/** The servers that hold data: a cluster's masters, or the one Redis. For SCAN, INFO, DBSIZE and probes. */
export const dataNodes = (redis: Redis): SingleRedis[] => (isCluster(redis) ? redis.nodes('master') : [redis]);

/** Resolves once the client can take commands (a cluster: once it has its slot map), or rejects after `timeoutMs`. */
export async function redisReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`Redis not ready within ${timeoutMs} ms (status ${redis.status})`)); }, timeoutMs);
    const onReady = () => { cleanup(); resolve(); };
    const cleanup = () => { clearTimeout(timer); redis.off('ready', onReady); };
    redis.on('ready', onReady);
  });
}

/** PING every data node: Redis answers only if every shard does. */
export async function pingAll(redis: Redis): Promise<void> {
  if (!isCluster(redis)) { await redis.ping(); return; }
  const masters = redis.nodes('master');
  if (masters.length === 0) throw new Error('no Redis Cluster master known');
  await Promise.all(masters.map((m) => m.ping()));
  const info = await redis.cluster('INFO');
  if (!/cluster_state:ok/.test(String(info))) throw new Error('Redis Cluster state is not ok');
}

// Hash slots (Redis Cluster spec): CRC16 (XMODEM) of the key, or of its first non-empty {tag}, mod 16384.
const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let b = 0; b < 8; b++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

export function keySlot(key: string): number {
  const open = key.indexOf('{');
  let hashed = key;
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) hashed = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(hashed, 'utf8')) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc % 16_384;
}

/**
 * The connection that serves `key` now: the master of its slot, or the one Redis. Undefined while
 * the cluster has no map for the slot. The same connection the client sends that key's commands on.
 */
export function nodeFor(redis: Redis, key: string): SingleRedis | undefined {
  if (!isCluster(redis)) return redis;
  const master = redis.slots[keySlot(key)]?.[0];
  if (!master) return undefined;
  return redis.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === master);
}
