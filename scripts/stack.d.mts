// Types for scripts/stack.mjs, which tests import to start and stop extra brokers.
export interface KafkaInstance {
  dir: string; port: number; controllerPort: number; heap: string;
  /** For a node of a quorum: node.id (default 1), controller.quorum.voters ("1@host:port,…"), a shared cluster id. */
  nodeId?: number; voters?: string; clusterId?: string;
  /** Copies of internal and default topics (default 1); min ISR is 2 when there are several. */
  replicas?: number;
  /** -XX:ActiveProcessorCount (default 2). */
  processors?: number;
  /** Extra server.properties lines. */
  extraProperties?: string[];
}
export const defaultKafka: KafkaInstance;
/** Where the local stack keeps its data (STACK_DIR, default .stack/). */
export const stackDir: string;
/** A new Kafka cluster id (base64url of 16 random bytes) that never starts with '-'. */
export function newKafkaClusterId(): string;
export function kafkaStart(inst?: KafkaInstance): Promise<boolean>;
export function kafkaListening(inst?: KafkaInstance, timeoutMs?: number): Promise<void>;
export function kafkaUp(inst?: KafkaInstance): Promise<void>;
export function kafkaDown(inst?: KafkaInstance, signal?: NodeJS.Signals): Promise<void>;
export function up(o?: { withPrometheus?: boolean }): Promise<void>;
export function down(): Promise<void>;
export const cfg: {
  kafkaPort: number; controllerPort: number; kafkaHeap: string; registryPort: number; registryHeap: string; registryDb: string;
  pgHost: string; pgPort: number; pgUser: string; redisPort: number; prometheusPort: number;
};
/** Creates the PostgreSQL database unless it exists. */
export function ensureDatabase(name: string): Promise<void>;
/** PostgreSQL unreachable: why, else undefined. */
export function postgresProblem(): Promise<string | undefined>;
