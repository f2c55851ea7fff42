// coupon-issuer entry point: the consumer service that turns accepted requests into coupons.
import { createLogger } from '../log.ts';
import { startTracing } from '../telemetry/tracing.ts';
import { startIssuer } from '../issuer/app.ts';
import { configOrExit, onShutdown } from './lifecycle.ts';

// First, so every span is recorded; off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (telemetry/tracing.ts).
const tracing = await startTracing('coupon-issuer');
const config = configOrExit('coupon-issuer');
const log = createLogger('coupon-issuer', config.LOG_LEVEL, config.LOG_PRETTY);
const started = startIssuer(config, log);
onShutdown(log, async () => {
  try { await (await started).close(); } finally { await tracing.shutdown(); }
});
try {
  await started;
} catch (err) {
  log.fatal({ err }, 'coupon-issuer failed to start');
  await tracing.shutdown();
  process.exit(1);
}
