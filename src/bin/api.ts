// coupon-api entry point: the Connect server (gRPC, gRPC-Web, Connect on one port). With
// API_WORKERS > 1 this process is a node:cluster primary and each worker runs the server
// (server/workers.ts); with API_WORKERS=1, one process and no cluster.
import cluster from 'node:cluster';
import { checkApiConfig } from '../config.ts';
import { createLogger } from '../log.ts';
import { startTracing } from '../telemetry/tracing.ts';
import { startApi } from '../server/app.ts';
import { announceListening, onPrimaryShutdown, runPrimary } from '../server/workers.ts';
import { exposeProcessMetrics } from '../metrics/serve.ts';
import { configOrExit, onShutdown } from './lifecycle.ts';

const config = configOrExit('coupon-api', checkApiConfig);
const base = createLogger('coupon-api', config.LOG_LEVEL, config.LOG_PRETTY);

if (config.API_WORKERS > 1 && cluster.isPrimary) {
  // The primary serves no RPC and records no spans: it forks, watches and merges metrics.
  await runPrimary(config, base.child({ role: 'primary' }), (close) => { onShutdown(base, close); });
} else {
  const log = cluster.isWorker ? base.child({ worker: cluster.worker?.id }) : base;
  // Before anything else starts, so every span is recorded; off unless OTEL_EXPORTER_OTLP_ENDPOINT
  // is set (telemetry/tracing.ts).
  const tracing = await startTracing('coupon-api');
  // A worker answers the primary's metrics requests from its first moment, so a scrape while it
  // starts does not wait for it to time out.
  if (cluster.isWorker) await exposeProcessMetrics(config.API_HOST, config.API_METRICS_PORT);
  const started = startApi(config, log);
  const begin = onShutdown(log, async () => {
    try { await (await started).close(); } finally { await tracing.shutdown(); }
  });
  if (cluster.isWorker) onPrimaryShutdown(begin);
  try {
    const app = await started;
    if (cluster.isWorker) announceListening(app.server);
  } catch (err) {
    log.fatal({ err }, 'coupon-api failed to start');
    await tracing.shutdown();
    process.exit(1);
  }
}
