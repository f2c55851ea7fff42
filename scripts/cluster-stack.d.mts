// Types for scripts/cluster-stack.mjs: the clustered local stack, and the knobs the proof tests
// turn (kill and restart one broker or one Redis node).
export interface ClusterBroker { index: number; nodeId: number; dir: string; port: number; controllerPort: number; heap: string }
export const clusterDir: string;
/** The three brokers, index 0..2, node.id = index + 1. */
export const clusterBrokers: readonly ClusterBroker[];
/** "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094" (STACK_CLUSTER_KAFKA_PORTS). */
export const clusterKafkaBrokers: string;
/** The six Redis Cluster nodes' ports (STACK_CLUSTER_REDIS_PORTS). */
export const redisPorts: readonly number[];
/** "127.0.0.1:17100,…,127.0.0.1:17105", for REDIS_CLUSTER_NODES. */
export const clusterRedisNodes: string;
/** Some part of the cluster has a pid file: it was started and not stopped with `down --cluster`. */
export function clusterPresent(): boolean;

export function clusterUp(): Promise<void>;
export function clusterDown(): Promise<void>;
export function clusterStatusRows(): Promise<Array<[name: string, where: string, up: boolean, detail: string]>>;

export interface KafkaClusterState {
  brokers: number[]; controller: number; topics: number; partitions: number;
  /** "topic-partition isr=[…] replicas=[…]" for every partition short of replicas or leader. */
  underReplicated: string[];
}
/** Starts broker `index` (0..2) unless it runs; resolves once it listens. */
export function startBroker(index: number): Promise<void>;
/** SIGTERM (controlled shutdown), SIGKILL after 30 s. */
export function stopBroker(index: number, signal?: NodeJS.Signals): Promise<void>;
/** SIGKILL; resolves once the process is gone. */
export function killBroker(index: number): Promise<{ nodeId: number; port: number; pid: number }>;
export function describeKafkaCluster(): Promise<KafkaClusterState>;
/** Until `brokers` (3) are registered and, with fullIsr (true), no partition is under-replicated. */
export function waitForKafkaCluster(o?: { brokers?: number; fullIsr?: boolean; timeoutMs?: number }): Promise<KafkaClusterState>;

export interface RedisClusterNode { id: string; port: number; flags: string[]; masterId?: string; configEpoch: number; link: string; slots: string[]; firstSlot?: number }
export interface RedisMaster { index: number; id: string; port: number; slots: string[]; replicas: number[] }
export function redisClusterInfo(port: number): Record<string, string> | undefined;
export function redisClusterNodes(port?: number): RedisClusterNode[];
/** Live masters with slots, index 0..2 in slot order. */
export function redisMasters(port?: number): RedisMaster[];
export function waitForRedisCluster(o?: { timeoutMs?: number; masters?: number }): Promise<{ nodes: number; masters: RedisMaster[] }>;
/** SIGKILLs master `index` and waits for its replica's promotion and cluster_state:ok everywhere. */
export function killRedisMaster(index: number, o?: { timeoutMs?: number }): Promise<{ killedPort: number; promotedPort: number; failoverMs: number }>;
export function killRedisNode(port: number): Promise<void>;
/** Restarts a node; resolves once it is back (as a replica after a failover) and the cluster is ok. */
export function restartRedisNode(port: number, o?: { timeoutMs?: number }): Promise<{ port: number; role: 'master' | 'replica'; masterPort?: number }>;
