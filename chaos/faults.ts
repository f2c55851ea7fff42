// The fault schedule and its injector. Faults come one at a time (docs/design.md promises I1–I5 under
// any *single* crash or outage): each is applied, lasts its seeded time, is repaired, and the next
// starts after a seeded gap. The kinds are the fault model's:
//   kill-api / kill-issuer   SIGKILL at an arbitrary line, started again after a moment
//   kafka-stop               the broker stops (SIGTERM or SIGKILL) for some seconds
//   redis-restart            SIGKILL and start again: every key is lost
//   pg-cut                   the proxy drops every PostgreSQL connection and refuses new ones
import type { CuttableProxy, OwnKafka, OwnRedis } from './infra.ts';
import { say, sleep } from './journal.ts';
import type { Prng } from './prng.ts';
import type { Service } from './services.ts';

export type FaultKind = 'kill-api' | 'kill-issuer' | 'kafka-stop' | 'redis-restart' | 'pg-cut';

export interface Fault {
  /** Planned start, ms after the sale opened (a fault never starts before the previous one ended). */
  atMs: number;
  kind: FaultKind;
  /** How long the part stays down before it is brought back. */
  downMs: number;
  signal: 'SIGTERM' | 'SIGKILL';
}

const DOWN_MS: Record<FaultKind, [number, number]> = {
  'kill-api': [200, 3_000],
  'kill-issuer': [200, 3_000],
  'kafka-stop': [2_000, 12_000],
  'redis-restart': [0, 2_000],
  'pg-cut': [2_000, 10_000],
};

/**
 * Faults in seeded rounds: each round applies every kind once, in a shuffled order, so any run
 * with five faults or more has met each kind. Durations and gaps are seeded too.
 */
export function faultSchedule(rng: Prng, durationMs: number): Fault[] {
  const kinds = Object.keys(DOWN_MS) as FaultKind[];
  const faults: Fault[] = [];
  let round: FaultKind[] = [];
  let at = rng.between(2_000, 5_000);
  while (at < durationMs) {
    if (round.length === 0) round = shuffle(rng, kinds);
    const kind = round.pop()!;
    const [min, max] = DOWN_MS[kind];
    const downMs = Math.round(rng.between(min, max));
    faults.push({ atMs: Math.round(at), kind, downMs, signal: rng.chance(0.5) ? 'SIGKILL' : 'SIGTERM' });
    at += downMs + rng.between(2_000, 6_000);
  }
  return faults;
}

function shuffle<T>(rng: Prng, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export const describeFault = (f: Fault) =>
  `${f.kind}${f.kind === 'kafka-stop' ? ` (${f.signal})` : ''} for ${(f.downMs / 1000).toFixed(1)} s`;

export interface Targets { kafka: OwnKafka; redis: OwnRedis; proxy: CuttableProxy; api: Service; issuer: Service }

export class FaultInjector {
  private readonly t: Targets;
  private stopping = false;
  applied = 0;
  readonly byKind = new Map<FaultKind, number>();

  constructor(targets: Targets) {
    this.t = targets;
  }

  /** Applies the schedule (relative to `openedAt`) until it ends, `untilMs` passes, or stop(). */
  async run(schedule: Fault[], openedAt: number, untilMs: number): Promise<void> {
    for (const fault of schedule) {
      const wait = openedAt + fault.atMs - Date.now();
      if (wait > 0) await this.sleepUnlessStopped(Math.min(wait, untilMs - Date.now()));
      if (this.stopping || Date.now() >= untilMs) return;
      this.applied++;
      this.byKind.set(fault.kind, (this.byKind.get(fault.kind) ?? 0) + 1);
      say(`fault ${this.applied}: ${describeFault(fault)}`);
      try {
        await this.apply(fault);
      } catch (err) {
        say(`fault ${this.applied} (${fault.kind}) could not be repaired cleanly: ${(err as Error).message}`);
      }
    }
  }

  stop(): void {
    this.stopping = true;
  }

  private async sleepUnlessStopped(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (!this.stopping && Date.now() < until) await sleep(Math.min(250, until - Date.now()));
  }

  private async apply(f: Fault): Promise<void> {
    const { kafka, redis, proxy, api, issuer } = this.t;
    switch (f.kind) {
      case 'kill-api':
      case 'kill-issuer': {
        const service = f.kind === 'kill-api' ? api : issuer;
        await service.kill();
        await sleep(f.downMs);
        service.start();
        // The next fault waits for the restart, so faults stay single (bounded: a start can fail
        // and be retried by the supervisor).
        await service.waitReady(45_000);
        return;
      }
      case 'kafka-stop':
        await kafka.stop(f.signal);
        await sleep(f.downMs);
        await kafka.start();
        return;
      case 'redis-restart':
        await redis.kill();
        await sleep(f.downMs);
        await redis.start();
        return;
      case 'pg-cut':
        await proxy.cut();
        await sleep(f.downMs);
        await proxy.restore();
        return;
    }
  }

  /** Brings every part back (whatever a fault may have left down) and waits for the services. */
  async restoreAll(): Promise<string[]> {
    const problems: string[] = [];
    const { kafka, redis, proxy, api, issuer } = this.t;
    if (!proxy.open) await proxy.restore();
    if (!redis.running) await redis.start();
    if (!kafka.running) await kafka.start();
    for (const service of [api, issuer]) {
      service.start();
      if (!(await service.waitReady(120_000))) problems.push(`${service.name}-not-ready-after-faults`);
    }
    return problems;
  }
}
