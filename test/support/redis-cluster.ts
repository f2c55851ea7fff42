// A Redis Cluster of the test's own: 3 masters with `replicasPerMaster` replicas each (redis-cli
// --cluster create), on free ports, data in a temp dir, never the shared Redis. It can kill a master
// (SIGKILL) and wait for its replica to take over, or pause a replica's replication to make it lag.
// With `viaProxies`, every node announces a cuttable proxy in front of it as its address (clients
// and replicas connect through it; the cluster bus does not), so a test can blackhole the path to
// one node while the cluster itself still sees it.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { Redis } from 'ioredis';
import { run } from './processes.ts';
import { cuttableProxy, type CuttableProxy } from './proxy.ts';
import { freePort } from './ports.ts';

export interface ClusterNodeProcess {
  port: number;
  child: ChildProcess;
  /** Straight to the node, never through its proxy. */
  client: Redis;
  /** With viaProxies: the proxy the node announces as its address. */
  proxy?: CuttableProxy | undefined;
  /** The port the cluster announces for the node: its proxy's, else its own. */
  announcedPort: number;
}

export interface OwnRedisCluster {
  /** REDIS_CLUSTER_NODES for the services: every node as host:port. */
  readonly seeds: string;
  readonly nodes: ClusterNodeProcess[];
  /** The node that serves `key` now (its slot's master). */
  masterOf(key: string): Promise<ClusterNodeProcess>;
  /** Replicas of the master on `port`. */
  replicasOf(port: number): Promise<ClusterNodeProcess[]>;
  /** SIGKILL the node on `port`; resolves once another node serves its slots and the cluster is ok. */
  killMaster(port: number, timeoutMs?: number): Promise<ClusterNodeProcess>;
  /** Starts the killed node on `port` again (its nodes.conf kept, data not): it rejoins as a replica and syncs. */
  restart(port: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}


/** A port whose cluster bus port (+10000) is below 65536 and free as well. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10_000 > 65_535) continue;
    const busFree = await new Promise<boolean>((resolve) => {
      const s = net.createServer().once('error', () => resolve(false)).listen(port + 10_000, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (busFree) return port;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, f: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try { const v = await f(); if (v !== undefined) return v; } catch (err) { last = err; }
    await sleep(100);
  }
  throw new Error(`${what} within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ''}`);
}

export interface OwnRedisClusterOptions {
  nodeTimeoutMs?: number;
  /** Replicas of each of the 3 masters (default 1): 3 × (1 + replicasPerMaster) redis-servers. */
  replicasPerMaster?: number;
  /** Every node announces a cuttable proxy in front of it (ClusterNodeProcess.proxy). */
  viaProxies?: boolean;
}

export async function startOwnRedisCluster(opts: OwnRedisClusterOptions = {}): Promise<OwnRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'coupon-redis-cluster-'));
  const nodeTimeout = opts.nodeTimeoutMs ?? 1_000;
  const replicasPerMaster = opts.replicasPerMaster ?? 1;
  const nodes: ClusterNodeProcess[] = [];
  const spawnNode = (port: number, announcedPort: number) => spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
      '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', String(nodeTimeout),
      '--cluster-announce-port', String(announcedPort), '--cluster-announce-bus-port', String(port + 10_000),
      // A replica takes over however long it was cut off: the test kills masters on purpose.
      '--cluster-replica-validity-factor', '0', '--maxmemory', '64mb', '--maxmemory-policy', 'noeviction',
  ], { stdio: 'ignore' });
  for (let i = 0; i < 3 * (1 + replicasPerMaster); i++) {
    const port = await clusterPort();
    const proxy = opts.viaProxies ? await cuttableProxy(port) : undefined;
    const announcedPort = proxy?.port ?? port;
    const child = spawnNode(port, announcedPort);
    const client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
    client.on('error', () => undefined);
    nodes.push({ port, child, client, proxy, announcedPort });
  }
  const stop = async () => {
    for (const n of nodes) n.client.disconnect();
    for (const n of nodes) { n.proxy?.lift(); await n.proxy?.close(); }
    await Promise.all(nodes.map(async (n) => {
      if (n.child.exitCode !== null || n.child.signalCode !== null) return;
      const exited = once(n.child, 'exit');
      n.child.kill('SIGKILL');
      await exited;
    }));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const n of nodes) await until(`redis-server on ${n.port} up`, async () => { await n.client.connect(); return (await n.client.ping()) === 'PONG' ? true : undefined; }, 10_000);
    const created = await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.announcedPort}`), '--cluster-replicas', String(replicasPerMaster), '--cluster-yes']);
    if (created.code !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`);
    await until('cluster_state:ok on every node', async () => {
      for (const n of nodes) if (!/cluster_state:ok/.test(String(await n.client.cluster('INFO')))) return undefined;
      // Every replica has finished its first sync.
      for (const n of nodes) {
        const info = await n.client.info('replication');
        if (/role:slave/.test(info) && !/master_link_status:up/.test(info)) return undefined;
      }
      return true;
    }, 30_000);
  } catch (err) {
    await stop();
    throw err;
  }

  // Slot maps and replication name nodes by their announced port; tests by their own.
  const byPort = (port: number) => nodes.find((n) => n.port === port || n.announcedPort === port)!;
  const alive = () => nodes.filter((n) => n.child.exitCode === null && n.child.signalCode === null);
  /** The slot map as a live node sees it: slot ranges, their master's and replicas' ports. */
  const slotMasters = async (): Promise<{ from: number; to: number; master: number; replicas: number[] }[]> => {
    const slots = await alive()[0]!.client.cluster('SLOTS');
    return slots.map(([from, to, master, ...replicas]) => ({ from, to, master: byPort(master![1]).port, replicas: replicas.map((r) => byPort(r[1]).port) }));
  };

  return {
    seeds: nodes.map((n) => `127.0.0.1:${n.announcedPort}`).join(','),
    nodes,
    async masterOf(key) {
      const slot = await alive()[0]!.client.cluster('KEYSLOT', key);
      const range = (await slotMasters()).find((r) => slot >= r.from && slot <= r.to);
      if (!range) throw new Error(`no master serves slot ${slot}`);
      return byPort(range.master);
    },
    async replicasOf(port) {
      const info = await byPort(port).client.info('replication');
      return [...info.matchAll(/^slave\d+:.*port=(\d+)/gm)].map((m) => byPort(Number(m[1])));
    },
    async killMaster(port, timeoutMs = 20_000) {
      const victim = byPort(port);
      const ranges = (await slotMasters()).filter((r) => r.master === port);
      victim.client.disconnect();
      const exited = once(victim.child, 'exit');
      victim.child.kill('SIGKILL');
      await exited;
      return until(`a replica of ${port} promoted`, async () => {
        const now = await slotMasters();
        const next = now.find((r) => r.from === ranges[0]!.from)?.master;
        if (next === undefined || next === port) return undefined;
        for (const n of alive()) if (!/cluster_state:ok/.test(String(await n.client.cluster('INFO')))) return undefined;
        return byPort(next);
      }, timeoutMs);
    },
    async restart(port, timeoutMs = 20_000) {
      const node = byPort(port);
      node.child = spawnNode(port, node.announcedPort);
      node.client = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
      node.client.on('error', () => undefined);
      await until(`${port} back as a synced replica`, async () => {
        if (node.client.status !== 'ready') await node.client.connect();
        const info = await node.client.info('replication');
        return /role:slave/.test(info) && /master_link_status:up/.test(info) ? true : undefined;
      }, timeoutMs);
    },
    stop,
  };
}
