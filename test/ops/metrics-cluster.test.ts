// With node:cluster workers sharing coupon-api's port, one scrape of the primary sees every worker.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { scrape, sumOf } from '../../src/metrics/text-format.ts';

describe('metrics under node:cluster', () => {
  it('are served by the primary as the merge of its workers: counters summed, a dependency up only if up in every worker', async () => {
    const child = spawn(process.execPath, [join(import.meta.dirname, '..', 'fixtures', 'metrics-cluster.ts')], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [line] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
      const { metricsPort } = JSON.parse(line) as { metricsPort: number };
      const samples = await scrape(`http://127.0.0.1:${metricsPort}/metrics`, 10_000);
      expect(sumOf(samples, 'coupon_gate_decisions_total', { outcome: 'won' })).toBe(2);
      expect(sumOf(samples, 'coupon_gate_decisions_total', { outcome: 'sold_out' })).toBe(1);
      expect(sumOf(samples, 'coupon_dependency_up', { dependency: 'redis' })).toBe(0);
      expect(sumOf(samples, 'coupon_dependency_up', { dependency: 'postgres' })).toBe(1);
      // Each worker's default metrics are in the merge too.
      expect(samples.some((s) => s.name === 'process_cpu_user_seconds_total')).toBe(true);
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    }
  });
});
