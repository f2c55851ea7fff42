// The clustered local stack, beside the single-node one and on its own ports:
//
// - Apache Kafka: three KRaft nodes, each broker and controller (node.id 1..3, a 3-voter quorum),
//   run from the same Maven Central jars as the single node, with default.replication.factor=3 and
//   min.insync.replicas=2 (internal topics alike). Small heaps, one processor seen per JVM.
// - Redis Cluster: six redis-server processes (three masters, one replica each) from the
//   machine's redis, no persistence, cluster-node-timeout 2 s so a failover takes a few seconds.
// - The schema registry is shared: the single stack's Apicurio Registry keeps schemas in
//   PostgreSQL, not in Kafka, so the clustered services use it as it is (started if missing).
//
// Data, logs and pid files live under .stack/cluster/ (kafka-<n>/, redis-<port>/). Every process
// has its own pid file, so one broker or one Redis node can be killed and restarted alone; the
// functions below do that for the proof tests. Its brokers run from the single-node stack's Kafka
// code (scripts/stack.ts), its processes from the primitives of scripts/proc.ts.
//
//   npm run stack:up -- --cluster | stack:down -- --cluster | stack:status
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { log, pidAlive, portOpen, sleep, startDetached, stop, waitFor } from './proc.ts';
import { kafkaListening, kafkaStart, newKafkaClusterId, postgresProblem, registryUp, type KafkaInstance } from './stack.ts';

const env = (name: string, fallback: string): string => process.env[name] ?? fallback;
const ports = (name: string, fallback: string, count: number): number[] => {
  const list = env(name, fallback).split(',').map((p) => Number(p.trim()));
  if (list.length !== count || list.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new Error(`${name} must list ${count} ports separated by commas, got ${JSON.stringify(env(name, fallback))}`);
  }
  return list;
};

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const clusterDir = env('STACK_CLUSTER_DIR', join(env('STACK_DIR', join(root, '.stack')), 'cluster'));
const kafkaPorts = ports('STACK_CLUSTER_KAFKA_PORTS', '19092,19093,19094', 3);
const controllerPorts = ports('STACK_CLUSTER_CONTROLLER_PORTS', '19192,19193,19194', 3);
const kafkaHeap = env('STACK_CLUSTER_KAFKA_HEAP', '288m');
/** Redis Cluster nodes; each also uses its port + 10000 for the cluster bus. */
export const redisPorts = ports('STACK_CLUSTER_REDIS_PORTS', '17100,17101,17102,17103,17104,17105', 6);
const redisNodeTimeoutMs = Number(env('STACK_CLUSTER_REDIS_NODE_TIMEOUT_MS', '2000'));

const voters = controllerPorts.map((p, i) => `${i + 1}@127.0.0.1:${p}`).join(',');

/** One broker of the cluster: a Kafka instance with its index (0..2) and node.id (index + 1). */
export interface ClusterBroker extends KafkaInstance { index: number; nodeId: number }

/** The three brokers, by index 0..2 (node.id = index + 1). */
export const clusterBrokers: readonly ClusterBroker[] = kafkaPorts.map((port, i) => ({
  index: i,
  nodeId: i + 1,
  dir: join(clusterDir, `kafka-${i + 1}`),
  port,
  controllerPort: controllerPorts[i]!,
  heap: kafkaHeap,
  voters,
  replicas: 3,
  processors: 1,
  extraProperties: [
    // A killed broker is fenced (and its partitions led elsewhere) ~6 s after its last heartbeat.
    'broker.heartbeat.interval.ms=1000',
    'broker.session.timeout.ms=6000',
    // Leadership goes back to the preferred replicas soon after a restarted broker caught up.
    'leader.imbalance.check.interval.seconds=15',
    'num.replica.fetchers=1',
    'background.threads=4',
    'num.recovery.threads.per.data.dir=1',
    'log.cleaner.threads=1',
  ],
}));

/** KAFKA_BROKERS for the clustered stack. */
export const clusterKafkaBrokers = kafkaPorts.map((p) => `127.0.0.1:${p}`).join(',');
/** REDIS_CLUSTER_NODES for the clustered stack. */
export const clusterRedisNodes = redisPorts.map((p) => `127.0.0.1:${p}`).join(',');

/** Whether the clustered stack is meant to run: some part has a pid file (`down` removes them). */
export const clusterPresent = (): boolean => clusterBrokers.some((b) => existsSync(join(b.dir, 'kafka.pid')))
  || redisPorts.some((p) => existsSync(join(redisDir(p), 'redis.pid')));

// ----------------------------------------------------------------------------------------- kafka

function brokerAt(index: number): ClusterBroker {
  const b = clusterBrokers[index];
  if (!b) throw new Error(`no broker with index ${index} (0..${clusterBrokers.length - 1})`);
  return b;
}

function clusterId(): string {
  const file = join(clusterDir, 'kafka-cluster-id');
  mkdirSync(clusterDir, { recursive: true });
  if (!existsSync(file)) writeFileSync(file, newKafkaClusterId());
  return readFileSync(file, 'utf8').trim();
}

/** Starts broker `index` (0..2) unless it runs; resolves once it listens (not once it caught up). */
export async function startBroker(index: number): Promise<void> {
  const b = brokerAt(index);
  await kafkaStart({ ...b, clusterId: clusterId() });
  await kafkaListening(b);
}

/** Stops broker `index` with `signal` (SIGTERM: controlled shutdown; SIGKILL after 30 s). */
export async function stopBroker(index: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const b = brokerAt(index);
  await stop('kafka', b.dir, signal, `Kafka node ${b.nodeId} (${b.port})`);
}

/** SIGKILLs broker `index` and returns once its process is gone. */
export async function killBroker(index: number): Promise<{ nodeId: number; port: number; pid: number }> {
  const b = brokerAt(index);
  const pidFile = join(b.dir, 'kafka.pid');
  const pid = pidAlive(pidFile);
  if (!pid) throw new Error(`Kafka node ${b.nodeId} is not running`);
  process.kill(pid, 'SIGKILL');
  while (pidAlive(pidFile)) await sleep(50);
  rmSync(pidFile, { force: true });
  log(`Kafka node ${b.nodeId} (127.0.0.1:${b.port}) killed`);
  return { nodeId: b.nodeId, port: b.port, pid };
}

// kafkajs 2.2.4 sets a timer with a negative delay on Node 24 (see src/events/kafka.ts): drop
// only that warning.
let warningFilter = false;
function quietKafkajsTimers(): void {
  if (warningFilter) return;
  warningFilter = true;
  const defaults = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (w) => { if (w.name !== 'TimeoutNegativeWarning') for (const l of defaults) l(w); });
}

export interface KafkaClusterState {
  brokers: number[]; controller: number | null; topics: number; partitions: number;
  /** "topic-partition isr=[…] replicas=[…]" for every partition short of replicas or leader. */
  underReplicated: string[];
}

/** What the cluster looks like now, from whichever broker answers. */
export async function describeKafkaCluster(): Promise<KafkaClusterState> {
  quietKafkajsTimers();
  const { Kafka, logLevel } = await import('kafkajs');
  const kafka = new Kafka({
    clientId: 'stack-cluster', brokers: clusterKafkaBrokers.split(','), logLevel: logLevel.NOTHING,
    connectionTimeout: 1000, requestTimeout: 5000, retry: { retries: 1, initialRetryTime: 100 },
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const { brokers, controller } = await admin.describeCluster();
    const { topics } = await admin.fetchTopicMetadata();
    const partitions = topics.flatMap((t) => t.partitions.map((p) => ({ topic: t.name, ...p })));
    const underReplicated = partitions.filter((p) => p.leader < 0 || p.isr.length < p.replicas.length);
    return {
      brokers: brokers.map((b) => b.nodeId).sort((a, b) => a - b),
      controller,
      topics: topics.length,
      partitions: partitions.length,
      underReplicated: underReplicated.map((p) => `${p.topic}-${p.partitionId} isr=[${p.isr.join(',')}] replicas=[${p.replicas.join(',')}]`),
    };
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/**
 * Waits until `brokers` brokers are registered and (with fullIsr, the default) no partition is
 * under-replicated or leaderless. With `brokers: 2, fullIsr: false` it waits for a killed broker
 * to be fenced. Returns the last description.
 */
export async function waitForKafkaCluster({ brokers = 3, fullIsr = true, timeoutMs = 120_000 }: { brokers?: number; fullIsr?: boolean; timeoutMs?: number } = {}): Promise<KafkaClusterState> {
  const deadline = Date.now() + timeoutMs;
  let last: KafkaClusterState;
  let why = 'no broker answered';
  while (Date.now() < deadline) {
    try {
      last = await describeKafkaCluster();
      if (last.brokers.length !== brokers) why = `brokers [${last.brokers.join(',')}], want ${brokers}`;
      else if (fullIsr && last.underReplicated.length) why = `under-replicated: ${last.underReplicated.slice(0, 5).join('; ')}`;
      else return last;
    } catch (err) {
      why = (err as Error).message;
    }
    await sleep(1000);
  }
  throw new Error(`the Kafka cluster did not settle within ${timeoutMs / 1000}s: ${why}`);
}

async function kafkaClusterUp(): Promise<void> {
  const id = clusterId();
  let started = false;
  for (const b of clusterBrokers) {
    // A little apart, so three JVMs do not warm up on two cores at the same moment.
    if (started) await sleep(1500);
    started = (await kafkaStart({ ...b, clusterId: id })) || started;
  }
  // No node serves clients before the quorum (two of three) has a leader, so all start first.
  await Promise.all(clusterBrokers.map((b) => kafkaListening(b, 120_000)));
  const c = await waitForKafkaCluster();
  log(`Kafka cluster is up: brokers [${c.brokers.join(',')}] on ${clusterKafkaBrokers}, controller ${c.controller}`);
}

// ----------------------------------------------------------------------------------------- redis

const redisDir = (port: number): string => join(clusterDir, `redis-${port}`);

function redisCli(port: number, ...args: string[]): string {
  return execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] });
}

function infoFields(text: string): Record<string, string> {
  return Object.fromEntries(text.split(/\r?\n/).filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
}

/** CLUSTER INFO of one node as an object, or undefined when it does not answer. */
export function redisClusterInfo(port: number): Record<string, string> | undefined {
  try { return infoFields(redisCli(port, 'cluster', 'info')); } catch { return undefined; }
}

export interface RedisClusterNode { id: string; port: number; flags: string[]; masterId: string | undefined; configEpoch: number; link: string; slots: string[]; firstSlot: number | undefined }
export interface RedisMaster { index: number; id: string; port: number; slots: string[]; replicas: number[] }

/** CLUSTER NODES as seen by `port` (the first live node when omitted). */
export function redisClusterNodes(port?: number): RedisClusterNode[] {
  const from = port ?? redisPorts.find((p) => redisClusterInfo(p));
  if (from === undefined) throw new Error('no Redis Cluster node answers');
  return redisCli(from, 'cluster', 'nodes').trim().split('\n').map((line) => {
    const [id, addr, flags, master, , , epoch, link, ...slots] = line.trim().split(' ');
    const firstSlot = slots.length ? Number(slots[0]!.split('-')[0]) : undefined;
    return {
      id: id!, port: Number(addr!.split('@')[0]!.split(':')[1]), flags: flags!.split(','), masterId: master === '-' ? undefined : master,
      configEpoch: Number(epoch), link: link!, slots, firstSlot,
    };
  });
}

/** The live masters that serve slots, index 0..2 in slot order (index 0 serves slot 0). */
export function redisMasters(port?: number): RedisMaster[] {
  const nodes = redisClusterNodes(port);
  return nodes
    .filter((n) => n.flags.includes('master') && !n.flags.includes('fail') && n.firstSlot !== undefined)
    .sort((a, b) => a.firstSlot! - b.firstSlot!)
    .map((m, index) => ({
      index, id: m.id, port: m.port, slots: m.slots,
      replicas: nodes.filter((n) => n.masterId === m.id && !n.flags.includes('fail')).map((n) => n.port),
    }));
}

function startRedisProcess(port: number): void {
  const dir = redisDir(port);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'redis.conf'), [
    `port ${port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    'cluster-enabled yes',
    'cluster-config-file nodes.conf',
    `cluster-node-timeout ${redisNodeTimeoutMs}`,
    'appendonly no',
    'save ""',
    // A rejoining node resyncs at once, straight from memory.
    'repl-diskless-sync yes',
    'repl-diskless-sync-delay 0',
    'daemonize no',
    'logfile ""',
    '',
  ].join('\n'));
  startDetached(dir, 'redis', 'redis-server', [join(dir, 'redis.conf')], {});
}

// Without persistence, a master that comes back before its replica took over returns empty, still
// owning its slots, and its replica then copies the empty data set: so a dead master is restarted
// only once the rest of the cluster has handed its slots over (or after `timeoutMs`, with a warning).
async function awaitFailoverOf(port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let warned = false;
  while (Date.now() < deadline) {
    let node: RedisClusterNode | undefined;
    try {
      node = redisClusterNodes(redisPorts.find((p) => p !== port && redisClusterInfo(p)))?.find((n) => n.port === port);
    } catch { return; } // no other node answers: the whole cluster is starting
    if (!node || !node.flags.includes('master') || node.slots.length === 0) return;
    if (!warned) { log(`Redis node ${port} was a master: waiting for its replica to take over before restarting it …`); warned = true; }
    await sleep(200);
  }
  log(`Redis node ${port} still owns slots after ${timeoutMs / 1000}s (no replica took over); restarting it anyway, empty`);
}

/** Starts the node unless it runs; `guard`: the rest of the cluster runs, so await its failover first. */
async function redisNodeUp(port: number, guard = true): Promise<void> {
  const dir = redisDir(port);
  if (!(await portOpen(port))) {
    if (!pidAlive(join(dir, 'redis.pid'))) {
      if (guard) await awaitFailoverOf(port);
      startRedisProcess(port);
    }
    await waitFor(`Redis node ${port}`, () => portOpen(port), 20_000, join(dir, 'redis.log'), join(dir, 'redis.pid'));
  }
}

/** Waits until every live node says cluster_state:ok and sees `masters` masters with slots. */
export async function waitForRedisCluster({ timeoutMs = 60_000, masters = 3 }: { timeoutMs?: number; masters?: number } = {}): Promise<{ nodes: number; masters: RedisMaster[] }> {
  const deadline = Date.now() + timeoutMs;
  let why = 'no node answered';
  while (Date.now() < deadline) {
    const live = redisPorts.map((p) => [p, redisClusterInfo(p)] as const).filter((e): e is readonly [number, Record<string, string>] => e[1] !== undefined);
    const notOk = live.filter(([, i]) => i.cluster_state !== 'ok').map(([p]) => p);
    if (live.length && !notOk.length) {
      try {
        const m = redisMasters();
        if (m.length === masters) return { nodes: live.length, masters: m };
        why = `${m.length} masters serve slots`;
      } catch (err) { why = (err as Error).message; }
    } else if (live.length) {
      why = `cluster_state not ok on ${notOk.join(', ')}`;
    }
    await sleep(200);
  }
  throw new Error(`Redis Cluster not ok within ${timeoutMs / 1000}s: ${why}`);
}

async function redisClusterUp(): Promise<void> {
  // When every node is down (a fresh start, or after down), none waits for another's failover.
  const running = (await Promise.all(redisPorts.map((p) => portOpen(p)))).some(Boolean);
  await Promise.all(redisPorts.map((p) => redisNodeUp(p, running)));
  const infos = redisPorts.map(redisClusterInfo);
  if (infos.every((i) => i && Number(i.cluster_slots_assigned) === 0 && Number(i.cluster_known_nodes) === 1)) {
    log(`creating Redis Cluster on ${redisPorts.join(', ')} (3 masters, 1 replica each) …`);
    execFileSync('redis-cli', ['--cluster', 'create', ...redisPorts.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 60_000 });
  }
  const { nodes, masters } = await waitForRedisCluster();
  log(`Redis Cluster is up: ${nodes} nodes, masters ${masters.map((m) => `${m.port} (replica ${m.replicas.join(',') || 'none'})`).join(', ')}`);
}

/**
 * SIGKILLs master `index` (0..2 in slot order) and waits until its replica has taken over and
 * every live node says cluster_state:ok again. Returns the ports and how long the failover took.
 */
export async function killRedisMaster(index: number, { timeoutMs = 30_000 }: { timeoutMs?: number } = {}): Promise<{ killedPort: number; promotedPort: number; failoverMs: number }> {
  const master = redisMasters()[index];
  if (!master) throw new Error(`no Redis master with index ${index}`);
  const pidFile = join(redisDir(master.port), 'redis.pid');
  const pid = pidAlive(pidFile);
  if (!pid) throw new Error(`Redis master ${master.port} has no live process (pid file ${pidFile})`);
  const killedAt = Date.now();
  process.kill(pid, 'SIGKILL');
  while (pidAlive(pidFile)) await sleep(20);
  rmSync(pidFile, { force: true });
  log(`Redis master ${master.port} killed; waiting for ${master.replicas.join(' or ')} to take over …`);
  const deadline = killedAt + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const now = redisMasters(master.replicas[0]).find((m) => m.slots[0] === master.slots[0] && m.port !== master.port);
      if (now && redisPorts.every((p) => p === master.port || redisClusterInfo(p)?.cluster_state === 'ok')) {
        const failoverMs = Date.now() - killedAt;
        log(`Redis node ${now.port} took over slots ${master.slots.join(' ')} after ${failoverMs} ms`);
        return { killedPort: master.port, promotedPort: now.port, failoverMs };
      }
    } catch { /* the asked node may be the one that died */ }
    await sleep(100);
  }
  throw new Error(`no replica of ${master.port} took over within ${timeoutMs / 1000}s`);
}

/** SIGKILLs one Redis node by port, master or replica, without waiting for anything. */
export async function killRedisNode(port: number): Promise<void> {
  const pidFile = join(redisDir(port), 'redis.pid');
  const pid = pidAlive(pidFile);
  if (!pid) throw new Error(`Redis node ${port} is not running`);
  process.kill(pid, 'SIGKILL');
  while (pidAlive(pidFile)) await sleep(20);
  rmSync(pidFile, { force: true });
}

/**
 * Restarts a stopped or killed Redis node; it rejoins from its nodes.conf and, when its slots went
 * to its replica meanwhile, becomes that node's replica. Resolves once it is a replica with its
 * link to the master up (or a master again, if no failover happened) and the cluster is ok.
 */
export async function restartRedisNode(port: number, { timeoutMs = 60_000 }: { timeoutMs?: number } = {}): Promise<{ port: number; role: 'master' | 'replica'; masterPort: number | undefined }> {
  await redisNodeUp(port);
  const dir = redisDir(port);
  await waitFor(`Redis node ${port} rejoining`, () => {
    try {
      const role = infoFields(redisCli(port, 'info', 'replication'));
      const joined = role.role === 'master' || role.master_link_status === 'up';
      return joined && redisPorts.every((p) => redisClusterInfo(p)?.cluster_state === 'ok');
    } catch { return false; }
  }, timeoutMs, join(dir, 'redis.log'), join(dir, 'redis.pid'));
  const role = infoFields(redisCli(port, 'info', 'replication'));
  log(`Redis node ${port} is back as ${role.role === 'slave' ? `replica of ${role.master_port}` : 'master'}`);
  return { port, role: role.role === 'slave' ? 'replica' : 'master', masterPort: role.master_port ? Number(role.master_port) : undefined };
}

// -------------------------------------------------------------------------------------- commands

/** Brings the clustered stack up (idempotent): the shared registry, three brokers, Redis Cluster. */
export async function clusterUp(): Promise<void> {
  const pg = await postgresProblem();
  if (pg) throw new Error(`${pg}\n(The shared schema registry keeps its schemas in PostgreSQL, and so does the ledger.)`);
  mkdirSync(clusterDir, { recursive: true });
  await Promise.all([registryUp(), kafkaClusterUp(), redisClusterUp()]);
}

/** Stops every process of the clustered stack (not the shared registry); data stays. */
export async function clusterDown(): Promise<void> {
  await Promise.all([
    ...clusterBrokers.map((b) => stop('kafka', b.dir, 'SIGTERM', `Kafka node ${b.nodeId} (${b.port})`)),
    ...redisPorts.map((p) => stop('redis', redisDir(p), 'SIGTERM', `Redis node ${p}`)),
  ]);
}

/** Rows for `stack:status`: [name, where, up, detail]. */
export async function clusterStatusRows(): Promise<Array<[name: string, where: string, up: boolean, detail: string]>> {
  const rows: Array<[name: string, where: string, up: boolean, detail: string]> = [];
  for (const b of clusterBrokers) {
    const pid = pidAlive(join(b.dir, 'kafka.pid'));
    rows.push([`kafka-${b.nodeId}`, `127.0.0.1:${b.port}`, await portOpen(b.port), pid ? `pid ${pid}` : 'no process']);
  }
  for (const p of redisPorts) {
    const info = redisClusterInfo(p);
    let detail = 'no process';
    if (info) {
      const role = infoFields(redisCli(p, 'info', 'replication'));
      detail = `${role.role === 'slave' ? `replica of ${role.master_port}` : 'master'}, cluster_state:${info.cluster_state}, ${info.cluster_known_nodes} nodes`;
    }
    rows.push([`redis-${p}`, `127.0.0.1:${p}`, Boolean(info && info.cluster_state === 'ok'), detail]);
  }
  return rows;
}
