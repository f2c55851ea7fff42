// grpc.health.v1.Health (Check, Watch, List). A background probe checks every dependency the API
// needs; the overall status ("") and coupon.v1.CouponService are SERVING only while all of them
// answer. Check reads the cached result, so health checks never pile load onto the dependencies.
// Each probe's result is also coupon_dependency_up{dependency}; coupon-issuer runs the same probes
// for that gauge alone.
import { EventEmitter, on } from 'node:events';
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import type { Admin } from 'kafkajs';
import { Health, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus as Status } from '../../gen/health/v1/health_pb.js';
import type { Config } from '../config.ts';
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

export class HealthMonitor {
  private readonly events = new EventEmitter();
  private serving = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly failing = new Map<string, string>();
  private stopped = false;

  private readonly probes: Probe[];
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  /** The services this server reports on, besides the overall "". */
  readonly services: readonly string[];

  constructor(opts: { probes: Probe[]; services: string[]; log: Logger; intervalMs?: number; timeoutMs?: number }) {
    this.probes = opts.probes;
    this.services = opts.services;
    this.log = opts.log;
    this.intervalMs = opts.intervalMs ?? 2_000;
    this.timeoutMs = opts.timeoutMs ?? 1_500;
    this.events.setMaxListeners(0);
  }

  /** Runs the first probe round (so a started server answers truthfully), then keeps probing. */
  async start(): Promise<void> {
    await this.probe();
    const loop = async () => {
      if (this.stopped) return;
      await this.probe();
      if (!this.stopped) this.timer = setTimeout(() => void loop(), this.intervalMs);
    };
    this.timer = setTimeout(() => void loop(), this.intervalMs);
  }

  /** Marks everything NOT_SERVING for the shutdown drain and stops probing. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.set(false);
  }

  status(service: string): Status | undefined {
    if (service !== '' && !this.services.includes(service)) return undefined;
    return this.serving ? Status.SERVING : Status.NOT_SERVING;
  }

  /** Unreachable dependencies and why, for logs and tests. */
  problems(): Record<string, string> { return Object.fromEntries(this.failing); }

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

  private set(serving: boolean): void {
    if (serving === this.serving) return;
    this.serving = serving;
    this.events.emit('change');
  }
}

export function healthRoutes(router: ConnectRouter, monitor: HealthMonitor): void {
  const response = (status: Status) => create(HealthCheckResponseSchema, { status });
  router.service(Health, {
    check(request) {
      const status = monitor.status(request.service);
      if (status === undefined) throw new ConnectError(`unknown service ${request.service}`, Code.NotFound);
      return response(status);
    },
    async *watch(request, context) {
      let last = monitor.status(request.service) ?? Status.SERVICE_UNKNOWN;
      yield response(last);
      for await (const _ of monitor.changes(context.signal)) {
        const next = monitor.status(request.service) ?? Status.SERVICE_UNKNOWN;
        if (next !== last) yield response((last = next));
      }
    },
    list() {
      return { statuses: Object.fromEntries(['', ...monitor.services].map((s) => [s, response(monitor.status(s) ?? Status.SERVICE_UNKNOWN)])) };
    },
  });
}
