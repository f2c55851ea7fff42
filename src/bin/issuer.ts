// coupon-issuer entry point: the consumer service that turns accepted requests into coupons.
import { createLogger } from '../log.ts';
import { startIssuer } from '../issuer/app.ts';
import { configOrExit, onShutdown } from './lifecycle.ts';

const config = configOrExit('coupon-issuer');
const log = createLogger('coupon-issuer', config.LOG_LEVEL, config.LOG_PRETTY);
const started = startIssuer(config, log);
onShutdown(log, async () => (await started).close());
try {
  await started;
} catch (err) {
  log.fatal({ err }, 'coupon-issuer failed to start');
  process.exit(1);
}
