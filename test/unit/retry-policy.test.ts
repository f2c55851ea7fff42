// The one retry policy (src/events/retry-policy.ts), with no broker: an outage is retried for as
// long as it lasts, with one alert and one recovery notice; the work's own failure is given up after
// maxAttempts, and outages in between do not count against it.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DomainError } from '../../src/domain/errors.ts';
import { AttemptsExhausted, backoffFor, OUTAGE_ALERT_AFTER, RetryAborted, withRetries, type RetryHooks } from '../../src/events/retry-policy.ts';

const policy = { maxAttempts: 3, backoffMs: 1, maxBackoffMs: 4 };
const outage = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
const poison = () => new Error('duplicate key value violates unique constraint');

function recorder() {
  const events: string[] = [];
  const delays: number[] = [];
  const hooks: RetryHooks = {
    onFailure: (_err, attempt, delay, isOutage) => { events.push(`${isOutage ? 'outage' : 'failure'} ${attempt}`); delays.push(delay); },
    onOutage: (_err, attempts) => { events.push(`alert after ${attempts}`); },
    onRecovered: (attempts) => { events.push(`recovered after ${attempts}`); },
    keepWaiting: () => true,
  };
  return { events, delays, hooks };
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

describe('withRetries, at the edges', () => {
  afterEach(() => { vi.restoreAllMocks(); });

  it('alerts only after OUTAGE_ALERT_AFTER (5) outages: four, then success, raise nothing', async () => {
    const { events, hooks } = recorder();
    let calls = 0;
    expect(await withRetries(policy, () => (++calls <= 4 ? Promise.reject(outage()) : Promise.resolve('done')), hooks)).toBe('done');
    expect(events).toEqual(['outage 1', 'outage 2', 'outage 3', 'outage 4']);
  });

  it('treats a DomainError saying a dependency is down as an outage', async () => {
    const { events, hooks } = recorder();
    let calls = 0;
    const down = () => new DomainError('BACKEND_UNAVAILABLE', 'Redis lost this coupon\'s gate state; retry shortly');
    expect(await withRetries({ ...policy, maxAttempts: 1 }, () => (++calls <= 2 ? Promise.reject(down()) : Promise.resolve('done')), hooks)).toBe('done');
    expect(events).toEqual(['outage 1', 'outage 2']);
  });

  it('gives up at once with maxAttempts 1, without waiting', async () => {
    const { events, hooks } = recorder();
    const err = await withRetries({ ...policy, maxAttempts: 1 }, () => Promise.reject(poison()), hooks).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttemptsExhausted);
    expect((err as AttemptsExhausted).message).toBe('gave up after 1 attempts: duplicate key value violates unique constraint');
    expect(events).toEqual([]);
  });

  it('keeps the time of the first failure and the last error as the cause', async () => {
    const { hooks } = recorder();
    const before = Date.now();
    const errors = [poison(), outage(), new Error('constraint violated again')];
    let calls = 0;
    const err = (await withRetries({ ...policy, maxAttempts: 2 }, () => Promise.reject(errors[calls++]!), hooks).catch((e: unknown) => e)) as AttemptsExhausted;
    expect(err.attempts).toBe(2);
    expect(err.cause).toBe(errors[2]);
    expect(err.message).toBe('gave up after 2 attempts: constraint violated again');
    expect(err.firstFailureAt.getTime()).toBeGreaterThanOrEqual(before);
    expect(err.firstFailureAt.getTime()).toBeLessThanOrEqual(Date.now());
  });

  it('stops with RetryAborted when the consumer stops waiting (keepWaiting answers false)', async () => {
    const { hooks } = recorder();
    const failure = outage();
    let calls = 0;
    const err = await withRetries(policy, () => { calls++; return Promise.reject(failure); }, { ...hooks, keepWaiting: () => false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetryAborted);
    expect((err as RetryAborted).message).toBe('the consumer stopped or lost its partitions while retrying');
    expect((err as RetryAborted).cause).toBe(failure);
    expect(calls).toBe(1);
  });

  it('waits 1, 2, 4, then 4 ms (the cap) between outages, with the jitter at its middle', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const { delays, hooks } = recorder();
    let calls = 0;
    await withRetries(policy, () => (++calls <= 4 ? Promise.reject(outage()) : Promise.resolve('done')), hooks);
    expect(delays).toEqual([1, 2, 4, 4]);
  });

  it('counts outages and the work\'s own failures apart for the backoff', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const { delays, hooks } = recorder();
    const script = [outage, outage, poison, outage];
    let calls = 0;
    await withRetries({ ...policy, maxBackoffMs: 100 }, () => (calls < script.length ? Promise.reject(script[calls++]!()) : Promise.resolve('done')), hooks);
    // outages 1 and 2, failure 1, outage 3
    expect(delays).toEqual([1, 2, 1, 4]);
  });
});

describe('backoffFor', () => {
  afterEach(() => { vi.restoreAllMocks(); });
  const p = { maxAttempts: 5, backoffMs: 200, maxBackoffMs: 10_000 };

  it('is 80% of the step at the lowest jitter and 120% at the highest', () => {
    const random = vi.spyOn(Math, 'random');
    random.mockReturnValue(0);
    expect([1, 2, 3].map((a) => backoffFor(p, a))).toEqual([160, 320, 640]);
    random.mockReturnValue(0.999_999_999);
    expect([1, 2, 3].map((a) => backoffFor(p, a))).toEqual([240, 480, 960]);
  });

  it('doubles from backoffMs and stops at maxBackoffMs', () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffFor(p, a))).toEqual([200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000]);
  });

  it('stops doubling after attempt 30, so a long outage never overflows', () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const uncapped = { maxAttempts: 5, backoffMs: 1, maxBackoffMs: Number.MAX_SAFE_INTEGER };
    expect(backoffFor(uncapped, 30)).toBe(536_870_912); // 2^29
    expect(backoffFor(uncapped, 1_000)).toBe(536_870_912);
  });
});
