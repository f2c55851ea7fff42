// coupon-api on every core (API_WORKERS > 1): a node:cluster primary forks the workers, each of
// which runs the whole coupon-api (startApi) on the one shared port; the primary runs no RPC server
// and accepts no connection: each worker listens on the port itself (SO_REUSEPORT, server/http.ts),
// so a burst of new connections is never paced by the primary handing sockets over one by one.
//
// The primary: serves the workers' merged metrics on API_METRICS_PORT; prints `coupon-api listening`
// once every worker listens; replaces a worker that dies (waiting longer and longer while workers
// crash-loop); on SIGTERM/SIGINT tells every worker to shut down, waits for their own graceful
// close, and exits 0 (1 if one had to be killed or failed to close). A worker that loses its
// primary (the primary was killed) exits at once: node:cluster does that on the IPC 'disconnect'.
import cluster, { type Worker } from 'node:cluster';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { serveClusterMetrics, type MetricsServer } from '../metrics/serve.ts';
import { reservePort, type RunningServer } from './http.ts';

const LISTENING = 'coupon-api:listening';
const SHUTDOWN = 'coupon-api:shutdown';

interface ListeningMessage { kind: typeof LISTENING; port: number; url: string }

const isMessage = (m: unknown, kind: string): boolean => typeof m === 'object' && m !== null && (m as { kind?: unknown }).kind === kind;

/** Crash loop: more than this many worker deaths within the window... */
const CRASH_LOOP_DEATHS = 5;
const CRASH_LOOP_WINDOW_MS = 10_000;
/** ...and a replacement waits this long, doubling while the loop goes on, up to the maximum. */
const CRASH_LOOP_FIRST_WAIT_MS = 1_000;
const CRASH_LOOP_MAX_WAIT_MS = 30_000;
/** On shutdown, beyond the workers' own grace period: their flush and disconnects. */
const SHUTDOWN_MARGIN_MS = 15_000;

/** In a worker: tells the primary this worker listens. */
export function announceListening(server: RunningServer): void {
  const message: ListeningMessage = { kind: LISTENING, port: server.port, url: server.url };
  process.send?.(message);
}

/** In a worker: `begin` runs when the primary asks this worker to shut down. */
export function onPrimaryShutdown(begin: (reason: string) => void): void {
  process.on('message', (m: unknown) => { if (isMessage(m, SHUTDOWN)) begin('primary'); });
}

/**
 * Runs the node:cluster primary until a signal stops it. `onStop` installs the signal handlers
 * (bin/lifecycle.ts) with the close it is given.
 */
export async function runPrimary(config: Config, log: Logger, onStop: (close: () => Promise<void>) => void): Promise<void> {
  const want = config.API_WORKERS;
  let metrics: MetricsServer | undefined;
  let ready = false;
  let stopping = false;
  const listening = new Map<number, ListeningMessage>();
  const pendingForks = new Set<NodeJS.Timeout>();
  const deaths: number[] = [];
  let crashLoopWaitMs = CRASH_LOOP_FIRST_WAIT_MS;

  // At start the workers come up one after another: each start creates topics and registers the
  // event schemas, and concurrent first registrations of a subject race in the registry.
  let forkedAtStart = 0;
  // Every worker binds its own sockets on the port (SO_REUSEPORT, server/http.ts), so the primary
  // checks once that the port is free and, for API_PORT=0, picks the one they all use.
  let port = config.API_PORT;
  const fork = () => {
    const worker = cluster.fork({ API_PORT: String(port) });
    worker.on('message', (m: unknown) => {
      if (!isMessage(m, LISTENING)) return;
      listening.set(worker.id, m as ListeningMessage);
      if (!ready && forkedAtStart < want) { forkedAtStart++; fork(); }
      if (ready || listening.size < want) return;
      ready = true;
      const first = [...listening.values()][0]!;
      log.info({ url: first.url, port: first.port, metricsPort: metrics?.port, workers: want, pid: process.pid }, 'coupon-api listening');
    });
  };

  cluster.on('exit', (worker: Worker, code: number | null, signal: string | null) => {
    listening.delete(worker.id);
    if (stopping) return;
    const about = { worker: worker.id, pid: worker.process.pid, code, signal };
    if (!ready) {
      failStart(new Error(`worker ${worker.id} (pid ${worker.process.pid}) exited during start (code ${code}, signal ${signal})`));
      return;
    }
    const now = Date.now();
    deaths.push(now);
    while (deaths.length > 0 && deaths[0]! < now - CRASH_LOOP_WINDOW_MS) deaths.shift();
    if (deaths.length <= CRASH_LOOP_DEATHS) {
      crashLoopWaitMs = CRASH_LOOP_FIRST_WAIT_MS;
      log.error(about, 'worker died; forking a replacement');
      fork();
      return;
    }
    log.error({ ...about, deathsInWindow: deaths.length, windowMs: CRASH_LOOP_WINDOW_MS, waitMs: crashLoopWaitMs }, 'workers are crash-looping; waiting before forking a replacement');
    const timer = setTimeout(() => { pendingForks.delete(timer); if (!stopping) fork(); }, crashLoopWaitMs);
    pendingForks.add(timer);
    crashLoopWaitMs = Math.min(CRASH_LOOP_MAX_WAIT_MS, crashLoopWaitMs * 2);
  });

  /** Tells every worker to shut down and waits for them; false if one had to be killed or did not exit 0. */
  const stopWorkers = async (): Promise<boolean> => {
    stopping = true;
    for (const t of pendingForks) clearTimeout(t);
    pendingForks.clear();
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
    let clean = true;
    await Promise.all(workers.map(async (w) => {
      const exited = new Promise<void>((resolve) => w.once('exit', (code: number | null) => { if (code !== 0) clean = false; resolve(); }));
      if (w.isDead()) return;
      try { w.send({ kind: SHUTDOWN }); } catch { w.process.kill('SIGTERM'); }
      const limit = config.API_SHUTDOWN_GRACE_MS + SHUTDOWN_MARGIN_MS;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => { timer = setTimeout(() => r(true), limit); })]);
      clearTimeout(timer);
      if (timedOut) {
        log.error({ worker: w.id, pid: w.process.pid, waitedMs: limit }, 'worker did not shut down in time; killing it');
        clean = false;
        w.process.kill('SIGKILL');
        await exited;
      }
    }));
    return clean;
  };

  const close = async () => {
    const clean = await stopWorkers();
    await metrics?.close();
    if (!clean) throw new Error('not every worker shut down cleanly');
  };
  onStop(close);

  // Like a single process that cannot start: stop everything, exit 1, and the log says why.
  const failStart = (err: unknown) => {
    if (stopping) return;
    log.fatal({ err }, 'coupon-api failed to start');
    void stopWorkers().then(() => metrics?.close()).finally(() => process.exit(1));
  };

  try {
    port = await reservePort(config.API_HOST, config.API_PORT);
    metrics = await serveClusterMetrics(config.API_HOST, config.API_METRICS_PORT);
  } catch (err) {
    failStart(err);
    return;
  }
  forkedAtStart = 1;
  fork();
}
