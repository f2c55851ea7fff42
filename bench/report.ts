// The report: tables on stdout, and every figure in report.json beside the chart.
import type { GateReport, GateRun } from './gate.ts';
import type { IssuerReport } from './issuer.ts';
import type { RebuildReport } from './rebuild.ts';
import { fmtInt, fmtMs, fmtPct } from './stats.ts';

export interface Target { name: string; measured: string; target: string; pass: boolean | null; note?: string }

export interface FullReport {
  startedAt: string;
  machine: { cores: number; loadAverageAtStart: number[]; otherBenchOrTestRunning: string[]; otherBenchOrTestRunningAtEnd: string[] };
  command: string;
  gate?: GateReport;
  ratios?: Record<string, number | null>;
  issuer?: IssuerReport;
  rebuild?: Omit<RebuildReport, 'lines'>;
  targets: Target[];
  files: Record<string, string>;
}

/** Columns: the first left-aligned, the rest right-aligned. */
export function table(rows: string[][], header = true): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const lines = rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ').trimEnd());
  if (header) lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return lines.join('\n');
}

const find = (g: GateReport, protocol: string, kind: 'noop' | 'issue', workers: number) => g.runs.find((r) => r.protocol === protocol && r.kind === kind && r.workers === workers);
const ratio = (a: GateRun | undefined, b: GateRun | undefined) => (a && b ? a.callsPerSec / b.callsPerSec : null);
const short = (r: GateRun) => `${r.protocol === 'connect-h1' ? 'connect' : 'grpc'} ${r.kind === 'issue' ? 'gate' : 'noop'} W${r.workers}`;

export function ratiosOf(g: GateReport): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  const n = g.settings.workers;
  for (const p of g.settings.protocols) {
    for (const w of [...new Set([1, n])]) {
      const gate = find(g, p, 'issue', w);
      out[`${p} gate W=${w} / no-op W=${w}`] = ratio(gate, find(g, p, 'noop', w));
      if (w !== 1) out[`${p} gate W=${w} / no-op W=1`] = ratio(gate, find(g, p, 'noop', 1));
      out[`${p} gate W=${w} / Lua script alone`] = gate ? gate.callsPerSec / g.ceilings.lua.callsPerSec : null;
    }
    if (n !== 1) out[`${p} no-op W=${n} / no-op W=1`] = ratio(find(g, p, 'noop', n), find(g, p, 'noop', 1));
  }
  const issuerRates = g.runs.map((r) => r.issuance?.issuerRowsPerSec).filter((x): x is number => typeof x === 'number');
  if (issuerRates.length) out['issuer rows/s in the gate runs (best) / PostgreSQL bulk insert'] = Math.max(...issuerRates) / g.ceilings.insert.rowsPerSec;
  return out;
}

export function targetsOf(g: GateReport | undefined, issuer: IssuerReport | undefined): Target[] {
  const t: Target[] = [];
  if (g) {
    const n = g.settings.workers;
    for (const p of g.settings.protocols) {
      const gate = find(g, p, 'issue', n);
      const want = p === 'connect-h1' ? 10_000 : 8_000;
      const h2 = gate?.load.generator === 'h2load' ? `; h2load: ${gate.load.users} users repeating, not the gate's mix` : '';
      if (gate) {
        t.push({ name: `${p} IssueCoupon/s (W=${n})`, measured: fmtInt(gate.callsPerSec), target: `≥ ${fmtInt(want)}`, pass: gate.callsPerSec >= want, note: h2 || undefined });
        t.push({ name: `${p} p99 (W=${n})`, measured: `${fmtMs(gate.latencyMs.p99)} ms`, target: '≤ 50 ms', pass: gate.latencyMs.p99 <= 50 });
        t.push({ name: `${p} max (W=${n})`, measured: `${fmtMs(gate.latencyMs.max)} ms`, target: '≤ 250 ms', pass: gate.latencyMs.max <= 250 });
      }
      const g1 = ratio(find(g, p, 'issue', 1), find(g, p, 'noop', 1));
      if (g1 !== null) t.push({ name: `${p} gate W=1 / no-op W=1`, measured: g1.toFixed(2), target: '≥ 0.8', pass: g1 >= 0.8 });
      if (n > 1) {
        const gn = ratio(gate, find(g, p, 'noop', 1));
        if (gn !== null) t.push({ name: `${p} gate W=${n} / no-op W=1`, measured: gn.toFixed(2), target: '> 1.0', pass: gn > 1 });
      }
    }
  }
  if (issuer) {
    t.push({ name: `issuer rows/s (backlog of ${fmtInt(issuer.backlog)})`, measured: fmtInt(issuer.rowsPerSec), target: '≥ 20,000', pass: issuer.rowsPerSec >= 20_000 });
  } else if (g) {
    const rates = g.runs.map((r) => r.issuance?.issuerRowsPerSec).filter((x): x is number => typeof x === 'number');
    if (rates.length) t.push({ name: 'issuer rows/s (best gate run; paced by the gate)', measured: fmtInt(Math.max(...rates)), target: '≥ 20,000', pass: Math.max(...rates) >= 20_000 });
  }
  if (g) {
    const gates = g.runs.filter((r) => r.issuance);
    if (gates.length) {
      const failed = gates.filter((r) => !r.issuance!.verdict.pass);
      t.push({ name: 'correctness verdict (every gate run)', measured: failed.length ? `FAIL: ${failed.map((r) => r.label).join(', ')}` : `${gates.length}/${gates.length} pass`, target: 'pass', pass: failed.length === 0 });
    }
  }
  return t;
}

export function renderGate(g: GateReport, ratios: Record<string, number | null>): string {
  const s = g.settings;
  const out: string[] = [];
  const ws = [...new Set([1, s.workers])];
  out.push(`GATE  Q ${fmtInt(s.quantity)} coupons · U ${fmtInt(s.users)} users · R ${fmtInt(s.requests)} requests · C ${fmtInt(s.connections)} connections · API_WORKERS ${ws.join(' and ')} · LOG_LEVEL ${s.logLevel}`);
  if (s.warmup > 0) out.push(`  each coupon-api start is warmed up first: ${fmtInt(Math.min(s.warmup, s.requests))} no-op and as many IssueCoupon calls (a coupon of their own) per protocol, not measured`);
  const gens = new Map<string, GateRun>();
  for (const r of g.runs) if (!gens.has(r.protocol)) gens.set(r.protocol, r);
  for (const [p, r] of gens) out.push(`  ${p}: ${r.load.note}\n    ${r.load.command}\n    tool: ${r.load.tool}`);
  out.push('');
  const rows: string[][] = [['run', 'calls', 'calls/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'OK', 'sold out', 'errors', 'gen CPU']];
  for (const r of g.runs) {
    rows.push([r.label, fmtInt(r.answered), fmtInt(r.callsPerSec), fmtMs(r.latencyMs.p50), fmtMs(r.latencyMs.p90), fmtMs(r.latencyMs.p99), fmtMs(r.latencyMs.max),
      fmtInt(r.counts.ok), fmtInt(r.counts.soldOut), fmtInt(r.counts.errors), fmtPct(r.cpu.groups['load generator']?.share ?? 0)]);
  }
  out.push(table(rows));
  for (const r of g.runs.filter((x) => x.load.capped)) out.push(`  ${r.label}: stopped by --duration-cap ${s.durationCapS} s with ${fmtInt(r.answered)} of ${fmtInt(s.requests)} calls answered`);
  for (const r of g.runs.filter((x) => Object.keys(x.load.generatorErrors).length)) out.push(`  ${r.label}: the generator reported ${Object.entries(r.load.generatorErrors).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  out.push('  OK counts repeats of a winner too (answered OK with the seq it won); counts for h2load runs come from coupon-api\'s metrics. gen CPU: the load generator\'s share of all cores.');
  const gates = g.runs.filter((r) => r.issuance);
  if (gates.length) {
    out.push('');
    const irows: string[][] = [['gate run', 'winners', 'issued', 'first call→all issued', 'all won→all issued', 'issuer rows/s', 'INSERTs', 'rows/INSERT', 'topic records', 'users twice', 'verdict']];
    for (const r of gates) {
      const i = r.issuance!;
      irows.push([r.label, fmtInt(i.winners), `${fmtInt(i.issued)}/${fmtInt(i.expected)}`, i.firstCallToIssuedMs === null ? 'never' : `${fmtInt(i.firstCallToIssuedMs)} ms`,
        i.allWonToIssuedMs === null ? '-' : `${fmtInt(i.allWonToIssuedMs)} ms`, i.issuerRowsPerSec === null ? '-' : fmtInt(i.issuerRowsPerSec), fmtInt(i.inserts),
        i.rowsPerInsert === null ? '-' : fmtInt(i.rowsPerInsert), fmtInt(i.topicRecords), fmtInt(i.issued - i.ledgerDistinctUsers), i.verdict.pass ? 'pass' : 'FAIL']);
    }
    out.push(table(irows));
    out.push('  verdict: winners in Redis = issued in Postgres = min(Q, users), no user or seq twice, seqs 1..Q, topic records ≥ winners, and (wrk, node) the OK answers carried exactly that many seqs.');
    out.push('  Polled every 100 ms: winners (HLEN in Redis) and coupons.issued_count. issuer rows/s = rows / (first issued_at → all issued): paced by the gate, not the issuer\'s ceiling (see ISSUER).');
    for (const r of gates) {
      const bad = Object.entries(r.issuance!.verdict.checks).filter(([, ok]) => !ok).map(([c]) => c);
      if (bad.length) out.push(`  ${r.label} FAILED: ${bad.join('; ')}`);
    }
  }
  out.push('');
  const names = new Set<string>();
  for (const r of g.runs) for (const k of Object.keys(r.cpu.groups)) names.add(k);
  const order = [...names].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const crows: string[][] = [[`CPU (% of ${g.runs[0]?.cpu.cores ?? '?'} cores)`, ...g.runs.map(short)]];
  for (const n of order) crows.push([n, ...g.runs.map((r) => (r.cpu.groups[n] ? fmtPct(r.cpu.groups[n].share) : '-'))]);
  crows.push(['other processes', ...g.runs.map((r) => fmtPct(r.cpu.otherShare))]);
  crows.push(['machine busy', ...g.runs.map((r) => fmtPct(r.cpu.machineBusyShare))]);
  out.push(table(crows));
  out.push('  From /proc/<pid>/stat over each run (generator start → exit); postgres is every postgres process, whoever its client; "other" is the rest of the machine.');
  out.push('');
  const { lua, insert } = g.ceilings;
  out.push('CEILINGS (same run)');
  out.push(`  no-op RPC: grpc.health.v1.Health/Check on the same port, protocol, generator and load (no auth): the no-op rows above`);
  out.push(`  gate Lua script alone: ${fmtInt(lua.callsPerSec)} calls/s, p50 ${lua.latencyMs.p50} ms, p99 ${lua.latencyMs.p99} ms (${lua.command}; winners ${fmtInt(lua.winners)}/${fmtInt(lua.quantity)})`);
  out.push(`  PostgreSQL bulk insert: ${fmtInt(insert.rowsPerSec)} rows/s (${fmtInt(insert.rows)} user_coupons rows, ${insert.batch} per INSERT … SELECT FROM unnest(…), one connection, ${insert.seconds.toFixed(2)} s)`);
  out.push('');
  out.push('RATIOS');
  const rrows: string[][] = [['ratio', 'value']];
  for (const [k, v] of Object.entries(ratios)) rrows.push([k, v === null ? '-' : v.toFixed(2)]);
  out.push(table(rrows, false));
  return out.join('\n');
}

function rank(name: string): number {
  const order = ['api', 'api primary', 'api worker', 'issuer', 'redis', 'kafka', 'registry', 'postgres', 'load generator', 'bench'];
  const i = order.findIndex((o) => name === o || name.startsWith(`${o} `));
  return i < 0 ? order.length : i;
}

export function renderIssuer(r: IssuerReport, insertCeiling?: number): string {
  const cpu = Object.entries(r.cpu.groups).filter(([, v]) => v.seconds > 0).map(([k, v]) => `${k} ${fmtPct(v.share)}`).join(', ');
  return [
    `ISSUER  drained a ${fmtInt(r.backlog)}-record backlog in ${r.seconds.toFixed(1)} s = ${fmtInt(r.rowsPerSec)} rows/s`,
    `  INSERT statements: ${r.inserts ?? '?'} (one per batch; ${r.rowsPerInsert ? fmtInt(r.rowsPerInsert) : '?'} rows per INSERT on average)`,
    ...(insertCeiling ? [`  ratio to PostgreSQL's bulk insert measured in the gate section: ${(r.rowsPerSec / insertCeiling).toFixed(2)}`] : []),
    `  CPU (% of ${r.cpu.cores} cores): ${cpu}; other processes ${fmtPct(r.cpu.otherShare)}; machine busy ${fmtPct(r.cpu.machineBusyShare)}`,
  ].join('\n');
}

export function renderTargets(targets: Target[]): string {
  const rows: string[][] = [['target (2-core machine)', 'measured', 'target', 'result']];
  for (const t of targets) rows.push([t.name, t.measured, t.target, t.pass === null ? '-' : t.pass ? 'pass' : 'MISS']);
  const notes = targets.filter((t) => t.note).map((t) => `  ${t.name}${t.note}`);
  return ['TARGETS', table(rows), ...notes].join('\n');
}
