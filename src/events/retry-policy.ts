// The one retry policy for every consumer: up to `maxAttempts` tries with exponential backoff
// (backoffMs, doubling, capped at maxBackoffMs, ±20% jitter so instances do not retry in lockstep).
export interface RetryPolicy { maxAttempts: number; backoffMs: number; maxBackoffMs: number }

export function backoffFor(policy: RetryPolicy, attempt: number): number {
  const base = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (attempt - 1));
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

/** Runs `fn` until it succeeds or the policy's attempts are used up (then AttemptsExhausted). */
export async function withRetries<T>(policy: RetryPolicy, fn: (attempt: number) => Promise<T>, onFailure: (err: unknown, attempt: number, delayMs: number) => Promise<void> | void): Promise<T> {
  let firstFailureAt: Date | undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      firstFailureAt ??= new Date();
      if (attempt >= policy.maxAttempts) throw new AttemptsExhausted(attempt, firstFailureAt, err);
      const delay = backoffFor(policy, attempt);
      await onFailure(err, attempt, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
