// coupon-issuer entry point: the consumer service that turns accepted requests into coupons.
import { ConfigError, loadConfig } from '../config.ts';
import { createLogger } from '../log.ts';
import { startIssuer } from '../issuer/app.ts';
import { onShutdown } from './shutdown.ts';

let config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`coupon-issuer: ${err.message}`);
  process.exit(2);
}
const log = createLogger('coupon-issuer', config.LOG_LEVEL, config.LOG_PRETTY);
try {
  const app = await startIssuer(config, log);
  onShutdown(log, () => app.close());
} catch (err) {
  log.fatal({ err }, 'coupon-issuer failed to start');
  process.exit(1);
}
