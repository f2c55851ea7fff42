// `npm start`: brings the stack up, then runs coupon-api and coupon-issuer in the foreground with
// readable logs. Ctrl-C stops both (the stack keeps running; `npm run stack:down` stops it).
//
// `npm start -- --cluster` does the same on the clustered stack (scripts/cluster-stack.ts): three
// Kafka brokers, Redis Cluster, topics under the prefix `cluster.` with replication factor 3 and
// min.insync.replicas 2, the ledger in its own database, coupon-api with two workers and two
// coupon-issuer processes in one consumer group, all on ports of their own beside `npm start`'s.
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cfg as stackCfg, ensureDatabase, up } from './stack.ts';
import { clusterKafkaBrokers, clusterRedisNodes, clusterUp, redisPorts } from './cluster-stack.ts';
import { withLocalAuth } from './local-auth.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cluster = process.argv.includes('--cluster');
const clusterDb = process.env.STACK_CLUSTER_DB ?? 'coupon_cluster';
try {
  if (cluster) {
    await clusterUp();
    await ensureDatabase(clusterDb);
  } else {
    await up();
  }
} catch (err) {
  console.error(`[start] ${(err as Error).message}`);
  process.exit(1);
}

// Without a configured JWKS, coupon-api trusts the local signing key (`npm run -s token -- <role>`).
const base = await withLocalAuth({ ...process.env, LOG_PRETTY: process.env.LOG_PRETTY ?? 'true' });
const or = (name: string, fallback: string): string => process.env[name] || fallback;

/** [name, env] of every process to run. */
let processes: Array<[name: 'api' | 'issuer', env: NodeJS.ProcessEnv]>;
if (cluster) {
  const shared = {
    ...base,
    // Where the clustered stack is: always these, whatever the shell says.
    KAFKA_BROKERS: clusterKafkaBrokers,
    KAFKA_REPLICATION_FACTOR: '3',
    KAFKA_MIN_INSYNC_REPLICAS: '2',
    REDIS_CLUSTER_NODES: clusterRedisNodes,
    // A build without Redis Cluster support then talks to a cluster node and fails loudly (MOVED)
    // instead of quietly using the single stack's Redis.
    REDIS_URL: `redis://127.0.0.1:${redisPorts[0]}/0`,
    // Its own topics (and so registry subjects) and ledger, and ports beside `npm start`'s.
    KAFKA_TOPIC_PREFIX: or('KAFKA_TOPIC_PREFIX', 'cluster.'),
    DATABASE_URL: or('DATABASE_URL', `postgres://${stackCfg.pgUser}@${stackCfg.pgHost}:${stackCfg.pgPort}/${clusterDb}`),
    API_PORT: or('API_PORT', '18080'),
    API_METRICS_PORT: or('API_METRICS_PORT', '19464'),
  };
  const issuerPorts = or('CLUSTER_ISSUER_METRICS_PORTS', '19465,19466').split(',');
  processes = [
    ['api', { ...shared, API_WORKERS: or('API_WORKERS', '2'), ISSUER_METRICS_PORT: issuerPorts[0] }],
    ...issuerPorts.map((port): [name: 'issuer', env: NodeJS.ProcessEnv] => ['issuer', { ...shared, ISSUER_METRICS_PORT: port }]),
  ];
} else {
  processes = [['api', base], ['issuer', base]];
}

const children = processes.map(([name, env]) => {
  // In this script's process group: a terminal's Ctrl-C (SIGINT to the whole foreground group), a
  // process-group kill or the terminal closing reach the services too. A service takes the signals
  // of one stop (the terminal's and the SIGTERM passed on below, within a second) as one.
  const child = spawn(process.execPath, [join(root, 'src', 'bin', `${name}.ts`)], { cwd: root, env, stdio: 'inherit' });
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`[start] coupon-${name} (pid ${child.pid}) exited (${signal ?? code}); stopping the others`);
      stop(code ?? 1);
    }
  });
  return child;
});

let stopping = false;
let stoppedAt = 0;
const running = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null;
function stop(code = 0): void {
  // One Ctrl-C can arrive twice (from the terminal and passed on by npm): signals within a second
  // of the first are one stop. A later one is a second Ctrl-C, which the services take as "exit now".
  if (stopping && Date.now() - stoppedAt < 1_000) return;
  if (!stopping) stoppedAt = Date.now();
  stopping = true;
  for (const c of children) if (running(c)) c.kill('SIGTERM');
  void Promise.all(children.map((c) => running(c) ? new Promise((r) => c.once('exit', r)) : Promise.resolve())).then(() => process.exit(code));
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
process.on('SIGHUP', () => stop(0));

const [apiName, apiEnv] = processes[0]!;
const port = apiEnv.API_PORT ?? '8080';
const metrics = processes.map(([name, env]) => `http://127.0.0.1:${name === 'api' ? env.API_METRICS_PORT || '9464' : env.ISSUER_METRICS_PORT || '9465'}/metrics (coupon-${name})`);
setTimeout(() => console.log(`
  coupon-${apiName} is starting on http://127.0.0.1:${port} (gRPC, gRPC-Web and Connect on one port)${cluster ? `
  clustered stack: Kafka ${clusterKafkaBrokers}, Redis Cluster ${clusterRedisNodes},
  topics ${apiEnv.KAFKA_TOPIC_PREFIX}* (replication 3, min.insync.replicas 2), ledger ${apiEnv.DATABASE_URL}` : ''}
  Prometheus metrics: ${metrics.join(', ')}

    npx buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:${port}/grpc.health.v1.Health/Check
    npx buf curl --http2-prior-knowledge --list-methods http://127.0.0.1:${port}
    grpcurl -plaintext 127.0.0.1:${port} list coupon.v1.CouponService
    npm run watch -- <coupon id>     # a live view of one sale

  Ctrl-C stops coupon-api and coupon-issuer; \`npm run stack:down${cluster ? ' -- --cluster' : ''}\` stops ${cluster ? 'the clustered stack' : 'Kafka and the registry'}.
`), 3000).unref();
