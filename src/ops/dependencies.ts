// Is each dependency reachable? A background probe of PostgreSQL, Redis, Kafka and the schema
// registry, shared by both processes: coupon-api's grpc.health.v1 reports SERVING only while every
// probe answers (server/health.ts), and both export coupon_dependency_up{dependency}.
import { EventEmitter, on } from 'node:events';
import type { Admin } from 'kafkajs';
import type { Config } from '../config.ts';
import { every, type Loop } from '../lib/every.ts';
import type { Logger } from '../log.ts';
import { dependencyUp } from '../metrics/dependencies.ts';
import type { Db } from '../store/db.ts';
import { pingAll, type Redis } from '../store/redis.ts';

/** A named dependency check; it rejects (or times out) when the dependency is unreachable. */
export interface Probe { name: string; check(): Promise<unknown> }

/** Cheap checks of PostgreSQL, Redis, Kafka and the schema registry, named as coupon_dependency_up labels them. */
export function dependencyProbes(config: Config, clients: { db: Db; redis: Redis; kafkaAdmin: Admin }): Probe[] {
  return [
    { name: 'postgres', check: () => clients.db.raw('select 1') },
    // On a Redis Cluster: every master, and the cluster's own state.
    { name: 'redis', check: () => pingAll(clients.redis) },
    { name: 'kafka', check: () => clients.kafkaAdmin.describeCluster() },
    {
      name: 'registry',
      check: async () => {
        const res = await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects`, { signal: AbortSignal.timeout(1_500) });
        if (!res.ok) throw new Error(`registry answered HTTP ${res.status}`);
      },
    },
  ];
}

export class DependencyMonitor {
  private readonly events = new EventEmitter();
  private readonly failing = new Map<string, string>();
  private up = false;
  private loop: Loop | undefined;
  private stopped = false;

  private readonly probes: Probe[];
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;

  constructor(opts: { probes: Probe[]; log: Logger; intervalMs?: number; timeoutMs?: number }) {
    this.probes = opts.probes;
    this.log = opts.log;
    this.intervalMs = opts.intervalMs ?? 2_000;
    this.timeoutMs = opts.timeoutMs ?? 1_500;
    this.events.setMaxListeners(0);
  }

  /** Runs the first probe round (so a started server answers truthfully), then keeps probing. */
  async start(): Promise<void> {
    this.loop = every(this.intervalMs, () => this.probe(), (err) => this.log.warn({ err: err.message }, 'dependency probe failed'));
    await this.loop.runNow();
  }

  /** Reports everything down from now on (a shutdown drains) and stops probing. */
  stop(): void {
    this.stopped = true;
    this.loop?.stop();
    this.set(false);
  }

  /** Whether every dependency answered the last probe round. */
  get allUp(): boolean { return this.up; }

  /** Unreachable dependencies and why, for logs and tests. */
  problems(): Record<string, string> { return Object.fromEntries(this.failing); }

  /** Yields each time allUp changes, until `signal` aborts. */
  changes(signal: AbortSignal): AsyncIterable<unknown> { return on(this.events, 'change', { signal }); }

  private async probe(): Promise<void> {
    const results = await Promise.all(this.probes.map(async (p) => {
      try {
        await Promise.race([p.check(), new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer in ${this.timeoutMs} ms`)), this.timeoutMs).unref())]);
        return [p.name, undefined] as const;
      } catch (err) {
        return [p.name, err instanceof Error ? err.message : String(err)] as const;
      }
    }));
    for (const [name, problem] of results) {
      dependencyUp.set({ dependency: name }, problem === undefined ? 1 : 0);
      const before = this.failing.get(name);
      if (problem === undefined) {
        if (before !== undefined) this.log.info({ dependency: name }, 'dependency reachable again');
        this.failing.delete(name);
      } else {
        if (before === undefined) this.log.warn({ dependency: name, err: problem }, 'dependency unreachable');
        this.failing.set(name, problem);
      }
    }
    if (!this.stopped) this.set(this.failing.size === 0);
  }

  private set(up: boolean): void {
    if (up === this.up) return;
    this.up = up;
    this.events.emit('change');
  }
}
