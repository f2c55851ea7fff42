// Process lifecycle shared by the entry points: validated config at start, graceful stop on signals.
import { ConfigError, loadConfig, type Config } from '../config.ts';
import type { Logger } from '../log.ts';

/** Signals this soon after the first belong to the same stop. */
const SAME_STOP_MS = 1_000;

/**
 * Installs the handlers before `started` settles, so a signal that arrives while the process is
 * still starting waits for the start and then closes cleanly. Returns a way to start the same
 * shutdown without a signal (a node:cluster worker told by its primary); that never counts as the
 * "second signal" that makes the process exit at once, so a Ctrl-C that reaches both the primary
 * and its workers still drains. Nor do signals within a second of the first (one Ctrl-C seen
 * twice); a later one exits at once.
 */
export function onShutdown(log: Logger, close: () => Promise<void>): (reason: string) => void {
  let closing = false;
  let signalled = false;
  const begin = (reason: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal: reason }, 'shutting down: draining in-flight work');
    close().then(
      () => { log.info('shut down cleanly'); process.exit(0); },
      (err: unknown) => { log.error({ err }, 'error while shutting down'); process.exit(1); },
    );
  };
  let firstSignalAt = 0;
  const handle = (signal: NodeJS.Signals) => {
    if (signalled) {
      // One stop can arrive as two signals: a terminal's Ctrl-C reaches the whole process group,
      // and a supervisor (npm start) passes a SIGTERM on as well. A second Ctrl-C is later.
      if (Date.now() - firstSignalAt < SAME_STOP_MS) { log.info({ signal }, 'signal of the same stop; still draining'); return; }
      log.warn({ signal }, 'second signal; exiting now');
      process.exit(1);
    }
    signalled = true;
    firstSignalAt = Date.now();
    begin(signal);
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
  return begin;
}

/** Validated settings, or exit code 2 with every bad variable named on stderr. */
export function configOrExit(processName: string, extraCheck?: (c: Config) => void): Config {
  try {
    const config = loadConfig();
    extraCheck?.(config);
    return config;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`${processName}: ${err.message}`);
    process.exit(2);
  }
}
