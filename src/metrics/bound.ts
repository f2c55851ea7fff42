// Counters on the per-call path, bound to one label set. prom-client hashes and validates the labels
// object on every inc(), a bound child included, which showed in a CPU profile of a sale
// (docs/performance.md). A bound counter here counts in a plain number and hands the sum to
// prom-client when the metric is read (its collect hook, run by every scrape, a cluster primary's
// included), so what a scrape shows is exact as of that scrape.
import type { Counter } from 'prom-client';

export interface BoundCounter { inc(): void }

interface Pending { labels: Record<string, string>; count: number }

const pendingOf = new WeakMap<Counter, Pending[]>();

/** A counter of `metric` for `labels`; the series exists (at 0) from now on. */
export function boundCounter<L extends string>(metric: Counter<L>, labels: Record<L, string>): BoundCounter {
  let pending = pendingOf.get(metric);
  if (!pending) {
    const list: Pending[] = [];
    pending = list;
    pendingOf.set(metric, list);
    // prom-client runs a metric's collect (a constructor option) before each read of it.
    const hooked = metric as unknown as { collect?: (this: Counter<L>) => unknown };
    const previous = hooked.collect;
    hooked.collect = function collect(this: Counter<L>) {
      for (const p of list) {
        if (p.count === 0) continue;
        const count = p.count;
        p.count = 0;
        metric.inc(p.labels as never, count);
      }
      return previous?.call(this);
    };
  }
  metric.inc(labels as never, 0);
  const entry: Pending = { labels, count: 0 };
  pending.push(entry);
  return { inc() { entry.count++; } };
}

/** Bound counters of `metric` by one label's value, made on first use (for a small, open set of values). */
export function boundByValue<L extends string>(metric: Counter<L>, label: L, fixed: Partial<Record<L, string>> = {}): (value: string) => void {
  const bound = new Map<string, BoundCounter>();
  return (value) => {
    let c = bound.get(value);
    if (!c) {
      c = boundCounter(metric, { ...fixed, [label]: value } as Record<L, string>);
      bound.set(value, c);
    }
    c.inc();
  };
}
