// coupon-api entry point: the Connect server (gRPC, gRPC-Web, Connect on one port).
import { ConfigError, loadConfig } from '../config.ts';
import { createLogger } from '../log.ts';
import { startApi } from '../server/app.ts';
import { onShutdown } from './shutdown.ts';

let config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`coupon-api: ${err.message}`);
  process.exit(2);
}
const log = createLogger('coupon-api', config.LOG_LEVEL, config.LOG_PRETTY);
try {
  const app = await startApi(config, log);
  onShutdown(log, () => app.close());
} catch (err) {
  log.fatal({ err }, 'coupon-api failed to start');
  process.exit(1);
}
