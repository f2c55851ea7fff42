// The single-node local stack, as a library: Apache Kafka (single-node KRaft) and Apicurio Registry,
// both resolved from Maven Central by the poms under infra/, run as background JVMs with data under
// .stack/ (git-ignored). PostgreSQL and Redis are used as found; this module only checks them and
// says what to start. `up({ withPrometheus })` also starts Prometheus (Debian's package, installed if
// missing) with ops/prometheus/prometheus.yml and its alert rules, data under .stack/prometheus. The
// clustered stack is scripts/cluster-stack.ts, which starts its brokers with the Kafka code here;
// this module knows nothing of it. Both run their processes with the primitives of scripts/proc.ts.
// The command line over both is scripts/stack-cli.ts (npm run stack:up | stack:down | stack:status).
//
// `up` is idempotent: parts already running are left alone.
import { spawnSync, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { log, pidAlive, portOpen, startDetached, stop, waitFor } from './proc.ts';
import { ensurePrometheusTools } from './promtool.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const stackDir = process.env.STACK_DIR ?? join(root, '.stack');
const env = (name: string, fallback: string): string => process.env[name] ?? fallback;

export const cfg = {
  kafkaPort: Number(env('STACK_KAFKA_PORT', '9092')),
  controllerPort: Number(env('STACK_KAFKA_CONTROLLER_PORT', '9093')),
  kafkaHeap: env('STACK_KAFKA_HEAP', '512m'),
  registryPort: Number(env('STACK_REGISTRY_PORT', '8081')),
  registryHeap: env('STACK_REGISTRY_HEAP', '384m'),
  registryDb: env('STACK_REGISTRY_DB', 'apicurio_registry'),
  pgHost: env('PGHOST', '127.0.0.1'),
  pgPort: Number(env('PGPORT', '5432')),
  pgUser: env('PGUSER', 'postgres'),
  redisPort: Number(env('STACK_REDIS_PORT', '6379')),
  prometheusPort: Number(env('STACK_PROMETHEUS_PORT', '9090')),
};

function versionOf(javaBin: string): number {
  const r = spawnSync(javaBin, ['-version'], { encoding: 'utf8' });
  return Number(/version "(\d+)/.exec(`${r.stderr}${r.stdout}`)?.[1] ?? 0);
}

// Apicurio Registry 3.x is compiled for Java 21. Kafka runs on the default java (17 here); the
// registry takes REGISTRY_JAVA_HOME, then JAVA_HOME, then any JDK >= 21 under /usr/lib/jvm.
function registryJava(): string {
  const candidates = [process.env.REGISTRY_JAVA_HOME, process.env.JAVA_HOME]
    .filter((home): home is string => Boolean(home))
    .map((home) => join(home, 'bin', 'java'));
  candidates.push('java');
  if (existsSync('/usr/lib/jvm')) {
    for (const d of readdirSync('/usr/lib/jvm').sort().reverse()) candidates.push(join('/usr/lib/jvm', d, 'bin', 'java'));
  }
  for (const bin of candidates) {
    if ((bin === 'java' || existsSync(bin)) && versionOf(bin) >= 21) return bin;
  }
  throw new Error('Apicurio Registry 3.x needs Java 21 or newer, and none was found (looked at REGISTRY_JAVA_HOME, JAVA_HOME, java on PATH and /usr/lib/jvm/*). Install one, for example a Temurin 21+ JDK, and set REGISTRY_JAVA_HOME.');
}

function mvn(args: string[]): void {
  try {
    execFileSync('mvn', ['-B', '-q', ...args], { cwd: root, stdio: 'inherit' });
  } catch (err) {
    throw new Error(`Maven failed (mvn ${args.join(' ')}). Maven Central must be reachable. ${(err as Error).message}`, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------- checks

/** Why PostgreSQL cannot be used, or undefined when it answers. */
export async function postgresProblem(): Promise<string | undefined> {
  if (await portOpen(cfg.pgPort, cfg.pgHost)) return undefined;
  return `PostgreSQL is not reachable at ${cfg.pgHost}:${cfg.pgPort}. Start it, for example: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`;
}

async function checkExternal(): Promise<string[]> {
  const problems: string[] = [];
  const pg = await postgresProblem();
  if (pg) problems.push(pg);
  if (!(await portOpen(cfg.redisPort))) {
    problems.push(`Redis is not reachable at 127.0.0.1:${cfg.redisPort}. Start it, for example: redis-server --daemonize yes --bind 127.0.0.1 --port ${cfg.redisPort} --save "" --appendonly no`);
  }
  return problems;
}

// ----------------------------------------------------------------------------------------- kafka

const kafkaDir = join(stackDir, 'kafka');
const kafkaLibs = join(kafkaDir, 'libs');

/**
 * A new Kafka cluster id: 16 random bytes in base64url, as Kafka's own, but never starting with '-'
 * (Kafka's Uuid.randomUuid() skips those too): `kafka-storage format -t -Abc…` reads such an id as
 * an option and refuses to format, which happened once in 64 fresh stacks.
 */
export function newKafkaClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/** One Kafka node: its directory (data, logs, pid file), ports and heap. */
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

/** The default broker; tests start extra ones (own dir and ports) to stop them without disturbing others. */
export const defaultKafka: KafkaInstance = { dir: kafkaDir, port: cfg.kafkaPort, controllerPort: cfg.controllerPort, heap: cfg.kafkaHeap };

/** Resolves Kafka's jars into .stack/kafka/libs once; every broker (single or clustered) runs from them. */
export function ensureKafkaLibs(): string {
  const libs = kafkaLibs;
  if (!existsSync(libs) || !readdirSync(libs).some((f) => f.startsWith('kafka_2.13-'))) {
    log('resolving Kafka from Maven Central (infra/kafka/pom.xml) …');
    mvn(['-f', 'infra/kafka/pom.xml', 'dependency:copy-dependencies', '-DincludeScope=runtime', `-DoutputDirectory=${libs}`]);
  }
  return libs;
}

// An instance may also say which node of a quorum it is (nodeId, voters: "1@host:port,…", a shared
// clusterId), how many copies internal topics keep (replicas; min ISR is 2 when there are several),
// how many processors the JVM sees, and extra server.properties lines.
function kafkaFiles(inst: KafkaInstance): { javaArgs: string[]; props: string } {
  const libs = ensureKafkaLibs();
  const replicas = inst.replicas ?? 1;
  const minIsr = Math.min(2, replicas);
  const dataDir = join(inst.dir, 'data');
  const props = join(inst.dir, 'server.properties');
  writeFileSync(props, [
    'process.roles=broker,controller',
    `node.id=${inst.nodeId ?? 1}`,
    `controller.quorum.voters=${inst.voters ?? `1@127.0.0.1:${inst.controllerPort}`}`,
    `listeners=PLAINTEXT://127.0.0.1:${inst.port},CONTROLLER://127.0.0.1:${inst.controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${inst.port}`,
    'controller.listener.names=CONTROLLER',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name=PLAINTEXT',
    `log.dirs=${dataDir}`,
    // Topics are created explicitly by the services, with partitions from config.
    'auto.create.topics.enable=false',
    'num.partitions=1',
    `default.replication.factor=${replicas}`,
    `offsets.topic.replication.factor=${replicas}`,
    'offsets.topic.num.partitions=4',
    `transaction.state.log.replication.factor=${replicas}`,
    `transaction.state.log.min.isr=${minIsr}`,
    `min.insync.replicas=${minIsr}`,
    'group.initial.rebalance.delay.ms=0',
    'num.network.threads=2',
    'num.io.threads=2',
    'log.retention.hours=168',
    ...(inst.extraProperties ?? []),
    '',
  ].join('\n'));
  writeFileSync(join(inst.dir, 'log4j.properties'), [
    'log4j.rootLogger=WARN, stdout',
    'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
    'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
    'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
    'log4j.logger.kafka.server.KafkaServer=INFO',
    'log4j.logger.kafka.server.BrokerServer=INFO',
    '',
  ].join('\n'));
  const javaArgs = [
    `-Xms${inst.heap}`, `-Xmx${inst.heap}`, '-XX:+UseG1GC', `-XX:ActiveProcessorCount=${inst.processors ?? 2}`,
    `-Dlog4j.configuration=file:${join(inst.dir, 'log4j.properties')}`,
    '-cp', `${libs}/*`,
  ];
  if (!existsSync(join(dataDir, 'meta.properties'))) {
    const clusterId = inst.clusterId ?? newKafkaClusterId();
    log(`formatting Kafka storage (cluster ${clusterId}) …`);
    execFileSync('java', [...javaArgs, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', props], { stdio: 'inherit' });
  }
  return { javaArgs, props };
}

/** Starts the broker's JVM unless it runs already; returns false when it was listening before. */
export async function kafkaStart(inst: KafkaInstance = defaultKafka): Promise<boolean> {
  const pidFile = join(inst.dir, 'kafka.pid');
  const name = inst.nodeId ? `Kafka node ${inst.nodeId}` : 'Kafka';
  if (await portOpen(inst.port)) { log(`${name} already listening on 127.0.0.1:${inst.port}`); return false; }
  mkdirSync(inst.dir, { recursive: true });
  if (pidAlive(pidFile)) {
    log(`${name} process exists but is not listening yet; waiting …`);
  } else {
    const { javaArgs, props } = kafkaFiles(inst);
    log(`starting ${name} (3.9) on 127.0.0.1:${inst.port} (heap ${inst.heap}) …`);
    startDetached(inst.dir, 'kafka', 'java', [...javaArgs, 'kafka.Kafka', props], {});
  }
  return true;
}

/** Waits until the broker listens on its port (or its process has exited). */
export async function kafkaListening(inst: KafkaInstance = defaultKafka, timeoutMs = 90_000): Promise<void> {
  const name = inst.nodeId ? `Kafka node ${inst.nodeId}` : 'Kafka';
  await waitFor(name, () => portOpen(inst.port), timeoutMs, join(inst.dir, 'kafka.log'), join(inst.dir, 'kafka.pid'));
}

export async function kafkaUp(inst: KafkaInstance = defaultKafka): Promise<void> {
  if (!(await kafkaStart(inst))) return;
  await kafkaListening(inst);
  log('Kafka is up');
}

export async function kafkaDown(inst: KafkaInstance = defaultKafka, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  await stop('kafka', inst.dir, signal);
}

// -------------------------------------------------------------------------------------- registry

const registryDir = join(stackDir, 'registry');
const registryUrl = `http://127.0.0.1:${cfg.registryPort}`;

async function registryHealthy(): Promise<boolean> {
  try {
    const res = await fetch(`${registryUrl}/apis/ccompat/v7/subjects`, { signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch { return false; }
}

/** Creates a PostgreSQL database on the local server if it does not exist. */
export async function ensureDatabase(name: string): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ host: cfg.pgHost, port: cfg.pgPort, user: cfg.pgUser, database: 'postgres' });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount === 0) {
      log(`creating database ${name}`);
      await client.query(`CREATE DATABASE "${name}"`);
    }
  } finally {
    await client.end();
  }
}

export async function registryUp(): Promise<void> {
  const pidFile = join(registryDir, 'registry.pid');
  if (await registryHealthy()) { log(`Apicurio Registry already answering on ${registryUrl}`); return; }
  mkdirSync(registryDir, { recursive: true });
  if (pidAlive(pidFile)) {
    log('Registry process exists but is not answering yet; waiting …');
  } else {
    const dist = join(registryDir, 'dist');
    if (!existsSync(join(dist, 'quarkus-run.jar'))) {
      log('resolving Apicurio Registry from Maven Central (infra/registry/pom.xml) …');
      mvn(['-f', 'infra/registry/pom.xml', 'dependency:unpack', `-Dregistry.dir=${dist}`]);
    }
    const java = registryJava();
    await ensureDatabase(cfg.registryDb);
    log(`starting Apicurio Registry 3 on ${registryUrl} (heap ${cfg.registryHeap}, storage: PostgreSQL database ${cfg.registryDb}) …`);
    startDetached(registryDir, 'registry', java, [
      `-Xms128m`, `-Xmx${cfg.registryHeap}`, '-XX:+UseSerialGC', '-XX:ActiveProcessorCount=2', '-jar', join(dist, 'quarkus-run.jar'),
    ], {
      QUARKUS_HTTP_HOST: '127.0.0.1',
      QUARKUS_HTTP_PORT: String(cfg.registryPort),
      // The management interface (health, metrics) would otherwise bind 0.0.0.0:9000.
      QUARKUS_MANAGEMENT_HOST: '127.0.0.1',
      QUARKUS_MANAGEMENT_PORT: env('STACK_REGISTRY_MANAGEMENT_PORT', '8091'),
      QUARKUS_PROFILE: 'prod',
      APICURIO_STORAGE_KIND: 'sql',
      APICURIO_STORAGE_SQL_KIND: 'postgresql',
      APICURIO_DATASOURCE_URL: `jdbc:postgresql://${cfg.pgHost}:${cfg.pgPort}/${cfg.registryDb}`,
      APICURIO_DATASOURCE_USERNAME: cfg.pgUser,
      APICURIO_DATASOURCE_PASSWORD: env('PGPASSWORD', 'postgres'),
    });
  }
  await waitFor('Apicurio Registry', registryHealthy, 150_000, join(registryDir, 'registry.log'), pidFile);
  log('Apicurio Registry is up');
}

// ------------------------------------------------------------------------------------ prometheus

const prometheusDir = join(stackDir, 'prometheus');
const prometheusUrl = `http://127.0.0.1:${cfg.prometheusPort}`;

async function prometheusReady(): Promise<boolean> {
  try {
    const res = await fetch(`${prometheusUrl}/-/ready`, { signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch { return false; }
}

async function prometheusUp(): Promise<void> {
  const pidFile = join(prometheusDir, 'prometheus.pid');
  if (await prometheusReady()) { log(`Prometheus already answering on ${prometheusUrl}`); return; }
  if (await portOpen(cfg.prometheusPort)) throw new Error(`port ${cfg.prometheusPort} is taken by something that is not a ready Prometheus; set STACK_PROMETHEUS_PORT`);
  mkdirSync(prometheusDir, { recursive: true });
  if (pidAlive(pidFile)) {
    log('Prometheus process exists but is not ready yet; waiting …');
  } else {
    const { prometheus } = ensurePrometheusTools();
    log(`starting Prometheus on ${prometheusUrl} (ops/prometheus/prometheus.yml: coupon-api :9464, coupon-issuer :9465, alert rules) …`);
    startDetached(prometheusDir, 'prometheus', prometheus, [
      `--config.file=${join(root, 'ops', 'prometheus', 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(prometheusDir, 'data')}`,
      '--storage.tsdb.retention.time=7d',
      `--web.listen-address=127.0.0.1:${cfg.prometheusPort}`,
    ], {});
  }
  await waitFor('Prometheus', prometheusReady, 60_000, join(prometheusDir, 'prometheus.log'), pidFile);
  log(`Prometheus is up: ${prometheusUrl}/alerts`);
}

// ------------------------------------------------------------------------------------- commands

/** The single-node stack's parts: prints a line for each, true when all that should run do. */
export async function singleNodeStatus(): Promise<boolean> {
  const rows: Array<[name: string, where: string, up: boolean]> = [
    ['postgres', `${cfg.pgHost}:${cfg.pgPort}`, await portOpen(cfg.pgPort, cfg.pgHost)],
    ['redis', `127.0.0.1:${cfg.redisPort}`, await portOpen(cfg.redisPort)],
    ['kafka', `127.0.0.1:${cfg.kafkaPort}`, await portOpen(cfg.kafkaPort)],
    ['registry', `${registryUrl}/apis/ccompat/v7`, await registryHealthy()],
  ];
  for (const [name, where, up] of rows) console.log(`${name.padEnd(10)} ${up ? 'up  ' : 'DOWN'} ${where}`);
  // Prometheus is optional: it counts only when it was started.
  const prometheusWanted = existsSync(join(prometheusDir, 'prometheus.pid'));
  const prometheusUp = await prometheusReady();
  console.log(`${'prometheus'.padEnd(10)} ${prometheusUp ? 'up  ' : prometheusWanted ? 'DOWN' : 'off '} ${prometheusUrl}${prometheusUp || prometheusWanted ? '' : ' (npm run stack:up -- --with-prometheus)'}`);
  return rows.every((r) => r[2]) && (prometheusUp || !prometheusWanted);
}

export async function up({ withPrometheus = false }: { withPrometheus?: boolean } = {}): Promise<void> {
  const problems = await checkExternal();
  if (problems.length) throw new Error(problems.join('\n'));
  // Both JVMs start in parallel; each waits for its own readiness.
  await Promise.all([kafkaUp(defaultKafka), registryUp(), withPrometheus ? prometheusUp() : undefined]);
}

export async function down(): Promise<void> {
  await stop('prometheus', prometheusDir);
  await stop('registry', registryDir);
  await kafkaDown(defaultKafka);
}
