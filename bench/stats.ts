// Figures from a run's per-call log: throughput, latency percentiles, and the series the chart draws.
import type { Call } from './load.ts';

export interface Latency { p50: number; p90: number; p99: number; max: number; mean: number }

/** Nearest-rank percentile of sorted values. */
export const percentile = (sorted: ArrayLike<number>, p: number) => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!);

/** Latency in ms. */
export function latencyOf(calls: Call[]): Latency {
  const v = Float64Array.from(calls, (c) => c.latencyUs / 1000).sort();
  let sum = 0;
  for (const x of v) sum += x;
  return { p50: percentile(v, 50), p90: percentile(v, 90), p99: percentile(v, 99), max: v.length ? v[v.length - 1]! : 0, mean: v.length ? sum / v.length : 0 };
}

export interface LatencyBucket { tMs: number; calls: number; p50: number; p99: number; max: number }

/** Calls by the time they were answered, in `bucketMs` slices from `originMs`: how many, and their latency (ms). */
export function latencySeries(calls: Call[], originMs: number, bucketMs: number): LatencyBucket[] {
  const buckets = new Map<number, number[]>();
  for (const c of calls) {
    const b = Math.floor(((c.startUs + c.latencyUs) / 1000 - originMs) / bucketMs);
    let list = buckets.get(b);
    if (!list) { list = []; buckets.set(b, list); }
    list.push(c.latencyUs / 1000);
  }
  return [...buckets.entries()].sort((a, b) => a[0] - b[0]).map(([b, list]) => {
    const v = Float64Array.from(list).sort();
    return { tMs: (b + 1) * bucketMs, calls: v.length, p50: percentile(v, 50), p99: percentile(v, 99), max: v[v.length - 1]! };
  });
}

/** Cumulative OK answers (client side) by answer time, one point per `bucketMs`. */
export function acceptedSeries(calls: Call[], originMs: number, bucketMs: number): { tMs: number; accepted: number }[] {
  const ends = calls.filter((c) => c.cls === 'a').map((c) => (c.startUs + c.latencyUs) / 1000 - originMs).sort((a, b) => a - b);
  const out: { tMs: number; accepted: number }[] = [];
  let i = 0;
  const lastMs = ends.length ? ends[ends.length - 1]! : 0;
  for (let t = bucketMs; t < lastMs + bucketMs; t += bucketMs) {
    while (i < ends.length && ends[i]! <= t) i++;
    out.push({ tMs: t, accepted: i });
  }
  return out;
}

export const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
export const fmtMs = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
export const fmtPct = (x: number) => `${(x * 100).toFixed(0)}%`;
