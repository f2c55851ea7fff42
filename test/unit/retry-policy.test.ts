// The one retry policy (src/events/retry-policy.ts), with no broker: an outage is retried for as
// long as it lasts, with one alert and one recovery notice; the work's own failure is given up after
// maxAttempts, and outages in between do not count against it.
import { describe, expect, it } from 'vitest';
import { AttemptsExhausted, backoffFor, OUTAGE_ALERT_AFTER, withRetries, type RetryHooks } from '../../src/events/retry-policy.ts';

const policy = { maxAttempts: 3, backoffMs: 1, maxBackoffMs: 4 };
const outage = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
const poison = () => new Error('duplicate key value violates unique constraint');

function recorder() {
  const events: string[] = [];
  const hooks: RetryHooks = {
    onFailure: (_err, attempt, _delay, isOutage) => { events.push(`${isOutage ? 'outage' : 'failure'} ${attempt}`); },
    onOutage: (_err, attempts) => { events.push(`alert after ${attempts}`); },
    onRecovered: (attempts) => { events.push(`recovered after ${attempts}`); },
    keepWaiting: () => true,
  };
  return { events, hooks };
}

describe('withRetries', () => {
  it('retries an outage past maxAttempts, alerts once, and notes the recovery', async () => {
    const { events, hooks } = recorder();
    let calls = 0;
    const result = await withRetries(policy, () => (++calls <= 8 ? Promise.reject(outage()) : Promise.resolve('done')), hooks);
    expect(result).toBe('done');
    expect(calls).toBe(9);
    expect(events.filter((e) => e.startsWith('alert'))).toEqual([`alert after ${OUTAGE_ALERT_AFTER}`]);
    expect(events.at(-1)).toBe('recovered after 8');
  });

  it('gives up the work\'s own failure after maxAttempts, however many outages came between', async () => {
    const { events, hooks } = recorder();
    const script = [poison, outage, outage, poison, outage, poison];
    let calls = 0;
    const err = await withRetries(policy, () => Promise.reject(script[calls++]!()), hooks).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttemptsExhausted);
    expect((err as AttemptsExhausted).attempts).toBe(3);
    expect(calls).toBe(6);
    expect(events).toEqual(['failure 1', 'outage 2', 'outage 3', 'failure 4', 'outage 5']);
  });

  it('backs off by doubling, capped, within 20% jitter', () => {
    for (let attempt = 1; attempt <= 10; attempt++) {
      const base = Math.min(10_000, 200 * 2 ** (attempt - 1));
      const delay = backoffFor({ maxAttempts: 5, backoffMs: 200, maxBackoffMs: 10_000 }, attempt);
      expect(delay).toBeGreaterThanOrEqual(Math.floor(base * 0.8));
      expect(delay).toBeLessThanOrEqual(Math.ceil(base * 1.2));
    }
  });
});
