// Process lifecycle shared by the entry points: validated config at start, graceful stop on signals.
import { ConfigError, loadConfig, type Config } from '../config.ts';
import type { Logger } from '../log.ts';

/**
 * Installs the handlers before `started` settles, so a signal that arrives while the process is
 * still starting waits for the start and then closes cleanly.
 */
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

/** Validated settings, or exit code 2 with every bad variable named on stderr. */
export function configOrExit(processName: string): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`${processName}: ${err.message}`);
    process.exit(2);
  }
}
