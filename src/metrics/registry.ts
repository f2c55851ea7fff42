// The project's Prometheus metrics all live on prom-client's default registry, each created once
// per process: a module loaded twice (test runners do that) finds its metric already registered and
// reuses it, as events/alert.ts does. Each area defines its metrics in its own module here, so a
// process exports only the metrics of what it runs (docs/operations.md#metrics).
//
// Names follow the ecosystem so dashboards and alerts carry over: grpc_server_* as
// grpc-ecosystem/go-grpc-prometheus has them, kafka_consumergroup_lag as Kafka exporters name it,
// and the project's own metrics start with coupon_ and carry their unit. `aggregator` says how a
// node:cluster primary merges its workers' values (serve.ts): by default they add up.
import { Counter, Gauge, Histogram, register, type CounterConfiguration, type GaugeConfiguration, type HistogramConfiguration } from 'prom-client';

export function counter<L extends string>(c: CounterConfiguration<L>): Counter<L> {
  return (register.getSingleMetric(c.name) as Counter<L> | undefined) ?? new Counter(c);
}
export function gauge<L extends string>(c: GaugeConfiguration<L>): Gauge<L> {
  return (register.getSingleMetric(c.name) as Gauge<L> | undefined) ?? new Gauge(c);
}
export function histogram<L extends string>(c: HistogramConfiguration<L>): Histogram<L> {
  return (register.getSingleMetric(c.name) as Histogram<L> | undefined) ?? new Histogram(c);
}
