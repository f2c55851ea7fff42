// The harness's own running commentary: one line per fault, phase and finding, stamped with the
// seconds since the run started, so a FAIL can be read against what was happening at the time.
const started = Date.now();

export const elapsed = () => (Date.now() - started) / 1000;

export function say(message: string): void {
  console.log(`[chaos +${elapsed().toFixed(1)}s] ${message}`);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Rejects with `what` after `ms`; every wait in the harness goes through this or has its own bound. */
export async function bounded<T>(what: string, ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${Math.round(ms / 1000)} s`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it returns true or `ms` pass; returns whether it did. */
export async function pollUntil(ms: number, everyMs: number, check: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return true;
    } catch { /* not yet */ }
    if (Date.now() >= deadline) return false;
    await sleep(everyMs);
  }
}

/** An epoch time as seconds into the run, the way `say` stamps its lines. */
export const atSeconds = (epochMs: number) => ((epochMs - started) / 1000).toFixed(1);
