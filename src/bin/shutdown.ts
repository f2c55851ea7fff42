// SIGTERM/SIGINT: run `close` once, then exit. A second signal exits at once.
import type { Logger } from '../log.ts';

export function onShutdown(log: Logger, close: () => Promise<void>): void {
  let closing = false;
  const handle = (signal: NodeJS.Signals) => {
    if (closing) { log.warn({ signal }, 'second signal; exiting now'); process.exit(1); }
    closing = true;
    log.info({ signal }, 'shutting down: draining in-flight work');
    close().then(
      () => { log.info('shut down cleanly'); process.exit(0); },
      (err: unknown) => { log.error({ err }, 'error while shutting down'); process.exit(1); },
    );
  };
  process.once('SIGTERM', handle);
  process.once('SIGINT', handle);
}
