// The one periodic loop: `task` runs every `intervalMs` after the previous run ended (never two at
// once, however slow a run is), errors go to `onError` and the loop goes on, and stop() ends it.
// Recovery, reconciliation and dependency probes all run on it.

export interface Loop {
  /** Runs the task once now (awaited), outside the schedule: a first round before serving. */
  runNow(): Promise<void>;
  stop(): void;
}

export function every(intervalMs: number, task: () => Promise<unknown>, onError: (err: Error) => void, opts: { unref?: boolean } = {}): Loop {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const run = async () => {
    try { await task(); } catch (err) { onError(err instanceof Error ? err : new Error(String(err))); }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => void run().finally(schedule), intervalMs);
    if (opts.unref) timer.unref();
  };
  schedule();
  return {
    runNow: run,
    stop() { stopped = true; clearTimeout(timer); },
  };
}
