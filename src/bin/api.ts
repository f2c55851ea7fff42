// coupon-api entry point: the Connect server (gRPC, gRPC-Web, Connect on one port).
import { createLogger } from '../log.ts';
import { startApi } from '../server/app.ts';
import { configOrExit, onShutdown } from './lifecycle.ts';

const config = configOrExit('coupon-api');
const log = createLogger('coupon-api', config.LOG_LEVEL, config.LOG_PRETTY);
const started = startApi(config, log);
onShutdown(log, async () => (await started).close());
try {
  await started;
} catch (err) {
  log.fatal({ err }, 'coupon-api failed to start');
  process.exit(1);
}
