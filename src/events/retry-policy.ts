// The one retry policy for every consumer (docs/design.md#outages-versus-poison):
// - a failure of the work itself (a record that can never succeed, a bug) gets `maxAttempts` tries
//   with exponential backoff, then its records go to the dead-letter topic with an alert;
// - an outage (src/domain/outage.ts: a dependency unreachable, slow or overloaded) is retried
//   forever with the same capped backoff, never dead-lettered; after `outageAlertAfter` failed
//   attempts in a row an alert is raised once, and the recovery is logged when it passes.
// Backoff: backoffMs, doubling, capped at maxBackoffMs, ±20% jitter so instances do not retry in
// lockstep.
import { isOutage } from '../domain/outage.ts';

export interface RetryPolicy { maxAttempts: number; backoffMs: number; maxBackoffMs: number }

/** The seed report's "retry 5 times, then alert". */
export const OUTAGE_ALERT_AFTER = 5;

export function backoffFor(policy: RetryPolicy, attempt: number): number {
  const base = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (Math.min(attempt, 30) - 1));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

export class AttemptsExhausted extends Error {
  override name = 'AttemptsExhausted';
  readonly attempts: number;
  readonly firstFailureAt: Date;
  constructor(attempts: number, firstFailureAt: Date, cause: unknown) {
    super(`gave up after ${attempts} attempts: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.attempts = attempts;
    this.firstFailureAt = firstFailureAt;
  }
}

/** Thrown when the consumer stops or loses its partitions while waiting out a failure. */
export class RetryAborted extends Error {
  override name = 'RetryAborted';
}

export interface RetryHooks {
  /** Called after each failed attempt, before waiting `delayMs`. */
  onFailure(err: unknown, attempt: number, delayMs: number, outage: boolean): Promise<void> | void;
  /** Called once when an outage has lasted OUTAGE_ALERT_AFTER attempts. */
  onOutage(err: unknown, attempts: number): Promise<void> | void;
  /** Called once when work succeeds after an outage alert. */
  onRecovered(attempts: number, outageMs: number): Promise<void> | void;
  /** Called while waiting, at least once a second (heartbeats); false aborts with RetryAborted. */
  keepWaiting(): Promise<boolean> | boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `fn` until it succeeds: outages are retried without limit, other failures until the
 * policy's attempts are used up (then AttemptsExhausted). A run of outages does not count against
 * the attempts of the work's own failures.
 */
export async function withRetries<T>(policy: RetryPolicy, fn: (attempt: number) => Promise<T>, hooks: RetryHooks): Promise<T> {
  let firstFailureAt: Date | undefined;
  let failures = 0;
  let outageAttempts = 0;
  let outageStartedAt = 0;
  let alerted = false;
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await fn(attempt);
      if (alerted) await hooks.onRecovered(outageAttempts, Date.now() - outageStartedAt);
      return result;
    } catch (err) {
      firstFailureAt ??= new Date();
      const outage = isOutage(err);
      let delay: number;
      if (outage) {
        if (outageAttempts === 0) outageStartedAt = Date.now();
        outageAttempts++;
        if (outageAttempts === OUTAGE_ALERT_AFTER && !alerted) { alerted = true; await hooks.onOutage(err, outageAttempts); }
        delay = backoffFor(policy, outageAttempts);
      } else {
        failures++;
        if (failures >= policy.maxAttempts) throw new AttemptsExhausted(failures, firstFailureAt, err);
        delay = backoffFor(policy, failures);
      }
      await hooks.onFailure(err, attempt, delay, outage);
      for (const until = Date.now() + delay; Date.now() < until;) {
        if (!(await hooks.keepWaiting())) throw new RetryAborted('the consumer stopped or lost its partitions while retrying', { cause: err });
        await sleep(Math.min(1_000, until - Date.now()));
      }
    }
  }
}
