// The fault schedule and its injector. Faults come one at a time (docs/design.md promises I1–I5 under
// any *single* crash or outage): each is applied, lasts its seeded time, is repaired, and the next
// starts after a seeded gap. The kinds are the fault model's:
//   kill-api / kill-issuer   SIGKILL at an arbitrary line, started again after a moment
//   kafka-stop               the broker stops (SIGTERM or SIGKILL) for some seconds
//   redis-restart            SIGKILL and start again: every key is lost
//   pg-cut                   the proxy drops every PostgreSQL connection and refuses new ones
// and an operator's changes to the live sale (chaos/lifecycle.ts), each at a seeded moment while the
// units are still contested:
//   pause                    PauseCoupon, hold for some seconds, ResumeCoupon; it takes its turn in
//                            the sequence above, so its exact checks read a gate no fault disturbs
//   restock                  UpdateCoupon raising total_quantity by a seeded amount
//   close                    CloseCoupon on a second, separate sale, ending it early
// restock and close are not faults but an operator's calls: they go out at their moment whatever
// fault is under way (a service down, Redis restarting, PostgreSQL cut), and a change answered
// UNAVAILABLE is repeated until decided, as an operator would.
import type { CuttableProxy, OwnKafka, OwnRedis } from './infra.ts';
import { say, sleep } from './journal.ts';
import type { Lifecycle } from './lifecycle.ts';
import type { Prng } from './prng.ts';
import type { Service } from './services.ts';

export type InfraKind = 'kill-api' | 'kill-issuer' | 'kafka-stop' | 'redis-restart' | 'pg-cut';
export type LifecycleKind = 'pause' | 'restock' | 'close';
export type FaultKind = InfraKind | LifecycleKind;

/** Kinds applied at their planned moment on a track of their own, overlapping whatever fault is under way. */
export const OVERLAPPING: ReadonlySet<FaultKind> = new Set<FaultKind>(['restock', 'close']);

export interface Fault {
  /** Planned start, ms after the sale opened (a fault never starts before the previous one ended). */
  atMs: number;
  kind: FaultKind;
  /** How long the part stays down before it is brought back (for a pause: how long it is held). */
  downMs: number;
  signal: 'SIGTERM' | 'SIGKILL';
  /** restock only: the units added to total_quantity. */
  amount?: number;
}

const DOWN_MS: Record<InfraKind, [number, number]> = {
  'kill-api': [200, 3_000],
  'kill-issuer': [200, 3_000],
  'kafka-stop': [2_000, 12_000],
  'redis-restart': [0, 2_000],
  'pg-cut': [2_000, 10_000],
};

/** How long a pause holds the sale. */
const PAUSE_MS: [number, number] = [1_500, 6_000];
/** Operator changes are planned in this share of the run, while the units are still contested. */
const LIFECYCLE_WINDOW: [number, number] = [0.1, 0.45];

/**
 * The operator's changes, each at a seeded moment of the window: a pause per minute of the run and a
 * restock per 90 s (at least one of each), and one close of the second sale. Sorted by time.
 */
export function lifecyclePlan(rng: Prng, durationMs: number, quantity: number): Fault[] {
  const plan: Fault[] = [];
  const at = () => Math.round(durationMs * rng.between(...LIFECYCLE_WINDOW));
  for (let i = 0; i < Math.max(1, Math.round(durationMs / 60_000)); i++) {
    plan.push({ atMs: at(), kind: 'pause', downMs: Math.round(rng.between(...PAUSE_MS)), signal: 'SIGTERM' });
  }
  for (let i = 0; i < Math.max(1, Math.round(durationMs / 90_000)); i++) {
    plan.push({ atMs: at(), kind: 'restock', downMs: 0, signal: 'SIGTERM', amount: rng.int(Math.ceil(quantity / 10), Math.ceil(quantity / 4)) });
  }
  plan.push({ atMs: at(), kind: 'close', downMs: 0, signal: 'SIGTERM' });
  return plan.sort((a, b) => a.atMs - b.atMs);
}

/**
 * Faults in seeded rounds: each round applies every infrastructure kind once, in a shuffled order,
 * so any run with five of them or more has met each kind. A pause (lifecyclePlan) takes the first
 * turn at or after its planned moment; restocks and the close keep their planned moment (OVERLAPPING).
 * Durations and gaps are seeded too. Sorted by start.
 */
export function faultSchedule(rng: Prng, durationMs: number, quantity: number): Fault[] {
  const kinds = Object.keys(DOWN_MS) as InfraKind[];
  const planned = lifecyclePlan(rng.fork('lifecycle'), durationMs, quantity);
  const plan = planned.filter((f) => !OVERLAPPING.has(f.kind));
  const faults: Fault[] = [];
  let round: InfraKind[] = [];
  let at = rng.between(2_000, 5_000);
  while (at < durationMs) {
    let fault: Fault;
    if (plan.length > 0 && plan[0]!.atMs <= at) {
      fault = { ...plan.shift()!, atMs: Math.round(at) };
    } else {
      if (round.length === 0) round = shuffle(rng, kinds);
      const kind = round.pop()!;
      const [min, max] = DOWN_MS[kind];
      fault = { atMs: Math.round(at), kind, downMs: Math.round(rng.between(min, max)), signal: rng.chance(0.5) ? 'SIGKILL' : 'SIGTERM' };
    }
    faults.push(fault);
    at += fault.downMs + rng.between(2_000, 6_000);
  }
  return [...faults, ...planned.filter((f) => OVERLAPPING.has(f.kind))].sort((a, b) => a.atMs - b.atMs);
}

function shuffle<T>(rng: Prng, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export function describeFault(f: Fault): string {
  switch (f.kind) {
    case 'restock': return `restock +${f.amount ?? 0}`;
    case 'close': return 'close (the second sale)';
    case 'pause': return `pause for ${(f.downMs / 1000).toFixed(1)} s`;
    default: return `${f.kind}${f.kind === 'kafka-stop' ? ` (${f.signal})` : ''} for ${(f.downMs / 1000).toFixed(1)} s`;
  }
}

export interface Targets { kafka: OwnKafka; redis: OwnRedis; proxy: CuttableProxy; api: Service; issuer: Service; lifecycle: Lifecycle }

export class FaultInjector {
  private readonly t: Targets;
  private stopping = false;
  applied = 0;
  readonly byKind = new Map<FaultKind, number>();

  constructor(targets: Targets) {
    this.t = targets;
  }

  /**
   * Applies the schedule (relative to `openedAt`) until it ends, `untilMs` passes, or stop(): the
   * faults one at a time, and the OVERLAPPING changes on their own track at their moment.
   */
  async run(schedule: Fault[], openedAt: number, untilMs: number): Promise<void> {
    await Promise.all([
      this.inTurn(schedule.filter((f) => !OVERLAPPING.has(f.kind)), openedAt, untilMs),
      this.inTurn(schedule.filter((f) => OVERLAPPING.has(f.kind)), openedAt, untilMs),
    ]);
  }

  private async inTurn(schedule: Fault[], openedAt: number, untilMs: number): Promise<void> {
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

  /** Stops applying faults; the one under way finishes (a change still repeating gives up). */
  stop(): void {
    this.stopping = true;
  }

  /** The run is being torn down: a change still repeating gives up at once. */
  abort(): void {
    this.stop();
    this.t.lifecycle.stop();
  }

  private async sleepUnlessStopped(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (!this.stopping && Date.now() < until) await sleep(Math.min(250, until - Date.now()));
  }

  private async apply(f: Fault): Promise<void> {
    const { kafka, redis, proxy, api, issuer, lifecycle } = this.t;
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
      case 'pause':
        await lifecycle.pause(f.downMs);
        return;
      case 'restock':
        await lifecycle.restock(f.amount ?? 1);
        return;
      case 'close':
        await lifecycle.closeSecondSale();
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
    // A pause whose resume was never decided is resumed now, as an operator would.
    if (!(await this.t.lifecycle.resumeIfPaused())) problems.push('coupon-still-paused-after-faults');
    return problems;
  }
}
