// Whether each process reaches PostgreSQL, Redis, Kafka and the schema registry, from the probes of
// server/health.ts. Under node:cluster a dependency counts as up only if every worker reaches it.
import { gauge } from './registry.ts';

/** Dependency names as the health probes call them (server/health.ts). */
export const dependencyUp = gauge({ name: 'coupon_dependency_up', help: '1 while the last probe of a dependency (postgres, redis, kafka, registry) succeeded, else 0.', labelNames: ['dependency'], aggregator: 'min' });
