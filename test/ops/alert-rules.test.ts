// The alert rules are valid, each one is unit-tested with promtool, and each links to a paragraph
// of the runbook that exists.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensurePrometheusTools } from '../../scripts/promtool.ts';
import { run } from '../support/processes.ts';

const root = join(import.meta.dirname, '..', '..');
const rulesFile = 'ops/prometheus/alerts.yml';
const read = (path: string) => readFileSync(join(root, path), 'utf8');
const alertNames = (text: string, key: string) => [...text.matchAll(new RegExp(`^\\s*-?\\s*${key}:\\s*(\\w+)\\s*$`, 'gm'))].map((m) => m[1]!);

describe('alert rules', () => {
  const { promtool } = ensurePrometheusTools();

  it('pass promtool check rules, and the Prometheus config that loads them passes check config', async () => {
    const rules = await run(promtool, ['check', 'rules', rulesFile]);
    expect(rules.code, rules.stdout + rules.stderr).toBe(0);
    expect(rules.stdout).toMatch(/SUCCESS: \d+ rules found/);
    const config = await run(promtool, ['check', 'config', 'ops/prometheus/prometheus.yml']);
    expect(config.code, config.stdout + config.stderr).toBe(0);
  });

  it('pass their unit tests (promtool test rules)', async () => {
    const tests = await run(promtool, ['test', 'rules', 'ops/prometheus/alerts.test.yml']);
    expect(tests.code, tests.stdout + tests.stderr).toBe(0);
    expect(tests.stdout).toContain('SUCCESS');
  });

  it('test every alert, firing and quiet', () => {
    const defined = alertNames(read(rulesFile), 'alert');
    expect(defined.length).toBeGreaterThanOrEqual(7);
    const testsText = read('ops/prometheus/alerts.test.yml');
    for (const name of defined) {
      const blocks = testsText.split(/alertname:\s*/).slice(1).filter((b) => b.startsWith(`${name}\n`));
      expect(blocks.some((b) => /exp_alerts:\s*\n\s*- exp_labels/.test(b)), `${name} is tested firing`).toBe(true);
      expect(blocks.some((b) => /exp_alerts:\s*\[\]/.test(b)), `${name} is tested quiet`).toBe(true);
    }
  });

  it('link every alert to a runbook paragraph that exists', () => {
    const rules = read(rulesFile);
    const runbook = read('ops/RUNBOOK.md');
    const anchors = new Set([...runbook.matchAll(/^##+ (.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-')));
    const links = [...rules.matchAll(/runbook_url:\s*(\S+)/g)].map((m) => m[1]!);
    expect(links).toHaveLength(alertNames(rules, 'alert').length);
    for (const link of links) {
      const [file, anchor] = link.split('#');
      expect(file).toBe('ops/RUNBOOK.md');
      expect(anchors, link).toContain(anchor);
    }
  });
});
