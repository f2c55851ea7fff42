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

const findIn = (runs: GateRun[], protocol: string, kind: 'noop' | 'issue', workers: number) => runs.find((r) => r.protocol === protocol && r.kind === kind && r.workers === workers);
const find = (g: GateReport, protocol: string, kind: 'noop' | 'issue', workers: number) => findIn(g.runs, protocol, kind, workers);
const ratio = (a: GateRun | undefined, b: GateRun | undefined) => (a && b ? a.callsPerSec / b.callsPerSec : null);
const p99Ratio = (a: GateRun | undefined, b: GateRun | undefined) => (a && b && b.latencyMs.p99 > 0 ? a.latencyMs.p99 / b.latencyMs.p99 : null);
/** a / b, when both are there and b is not 0. */
const over = (a: number | null | undefined, b: number | null | undefined) => (a === null || a === undefined || b === null || b === undefined || b === 0 ? null : a / b);
const short = (r: GateRun) => `${r.protocol === 'connect-h1' ? 'connect' : 'grpc'} ${r.kind === 'issue' ? 'gate' : 'noop'} W${r.workers}`;

export function ratiosOf(g: GateReport): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  const n = g.settings.workers;
  for (const p of g.settings.protocols) {
    for (const w of [...new Set([1, n])]) {
      const gate = find(g, p, 'issue', w);
      out[`${p} gate W=${w} / no-op W=${w}`] = ratio(gate, find(g, p, 'noop', w));
      out[`${p} gate W=${w} p99 / no-op W=${w} p99`] = p99Ratio(gate, find(g, p, 'noop', w));
      if (w !== 1) out[`${p} gate W=${w} / no-op W=1`] = ratio(gate, find(g, p, 'noop', 1));
      out[`${p} gate W=${w} / Lua script alone`] = gate ? gate.callsPerSec / g.ceilings.lua.callsPerSec : null;
    }
    if (n !== 1) out[`${p} no-op W=${n} / no-op W=1`] = ratio(find(g, p, 'noop', n), find(g, p, 'noop', 1));
  }
  const issuerRates = g.runs.map((r) => r.issuance?.issuerRowsPerSec).filter((x): x is number => typeof x === 'number');
  if (issuerRates.length) out['issuer rows/s in the gate runs (best) / PostgreSQL bulk insert'] = Math.max(...issuerRates) / g.ceilings.insert.rowsPerSec;
  const c = g.compare;
  if (c) {
    for (const p of g.settings.protocols) {
      for (const w of [...new Set([1, n])]) {
        const [mine, theirs] = [find(g, p, 'issue', w), findIn(c.runs, p, 'issue', w)];
        out[`${p} gate W=${w}: calls/s, this / ${c.ref}`] = ratio(mine, theirs);
        out[`${p} gate W=${w}: p99, this / ${c.ref}`] = p99Ratio(mine, theirs);
        out[`${p} gate W=${w}: coupon-api CPU per call, this / ${c.ref}`] = over(mine?.perCall.apiCpuUs, theirs?.perCall.apiCpuUs);
        out[`${p} gate W=${w}: Redis commands per call, this / ${c.ref}`] = over(mine?.perCall.redisCommandsPerCall, theirs?.perCall.redisCommandsPerCall);
      }
    }
  }
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
      const noop = find(g, p, 'noop', n);
      const sale = ratio(gate, noop);
      if (sale !== null) t.push({ name: `${p} sale / no-op (W=${n}, C=${g.settings.connections})`, measured: sale.toFixed(2), target: '≥ 0.9', pass: sale >= 0.9 });
      const p99 = p99Ratio(gate, noop);
      if (p99 !== null) t.push({ name: `${p} p99 sale / p99 no-op (W=${n}, C=${g.settings.connections})`, measured: p99.toFixed(2), target: '≤ 1.5', pass: p99 <= 1.5 });
      if (g.compare) {
        const cpu = over(gate?.perCall.apiCpuUs, findIn(g.compare.runs, p, 'issue', n)?.perCall.apiCpuUs);
        if (cpu !== null) t.push({ name: `${p} coupon-api CPU per IssueCoupon, this / ${g.compare.ref} (W=${n})`, measured: cpu.toFixed(2), target: '≤ 0.5', pass: cpu <= 0.5 });
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
    const gates = [...g.runs, ...(g.compare?.runs ?? [])].filter((r) => r.issuance);
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
  out.push(`GATE  Q ${fmtInt(s.quantity)} coupons · U ${fmtInt(s.users)} users · R ${fmtInt(s.requests)} requests · C ${fmtInt(s.connections)} connections · API_WORKERS ${ws.join(' and ')} · LOG_LEVEL ${s.logLevel} · ${s.logFormat} logs · commit ${g.commit}${g.compare ? ` · against ${g.compare.ref} (${g.compare.commit})` : ''}`);
  out.push(`  coupon-api and coupon-issuer as npm start runs them (JWT auth on every call), logs ${s.logFormat === 'json' ? 'as JSON lines (production: LOG_PRETTY=false)' : 'pretty-printed (npm start: LOG_PRETTY=true)'}; Redis ${g.redis.own ? `a redis-server of the bench's own (${g.redis.url}, the stack's settings)` : `the stack's (${g.redis.url})`}`);
  if (s.warmup > 0) out.push(`  each coupon-api start is warmed up first: ${fmtInt(Math.min(s.warmup, s.requests))} no-op and as many IssueCoupon calls (a coupon of their own) per protocol, not measured`);
  const gens = new Map<string, GateRun>();
  for (const r of g.runs) if (!gens.has(r.protocol)) gens.set(r.protocol, r);
  for (const [p, r] of gens) out.push(`  ${p}: ${r.load.note}\n    ${r.load.command}\n    tool: ${r.load.tool}`);
  out.push('');
  const all = [...g.runs, ...(g.compare?.runs ?? [])];
  const rows: string[][] = [['run', 'calls', 'calls/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'OK', 'sold out', 'errors', 'gen CPU']];
  for (const r of all) {
    rows.push([r.label, fmtInt(r.answered), fmtInt(r.callsPerSec), fmtMs(r.latencyMs.p50), fmtMs(r.latencyMs.p90), fmtMs(r.latencyMs.p99), fmtMs(r.latencyMs.max),
      fmtInt(r.counts.ok), fmtInt(r.counts.soldOut), fmtInt(r.counts.errors), fmtPct(r.cpu.groups['load generator']?.share ?? 0)]);
  }
  out.push(table(rows));
  for (const r of all.filter((x) => x.load.capped)) out.push(`  ${r.label}: stopped by --duration-cap ${s.durationCapS} s with ${fmtInt(r.answered)} of ${fmtInt(s.requests)} calls answered`);
  for (const r of all.filter((x) => Object.keys(x.load.generatorErrors).length)) out.push(`  ${r.label}: the generator reported ${Object.entries(r.load.generatorErrors).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  out.push('  OK counts repeats of a winner too (answered OK with the seq it won); counts for h2load runs come from coupon-api\'s metrics. gen CPU: the load generator\'s share of all cores.');
  out.push('');
  out.push(renderPerCall(g));
  const gates = all.filter((r) => r.issuance);
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
  out.push(`  From /proc/<pid>/stat over each run (generator start → exit); postgres is every postgres process, whoever its client; "other" is the rest of the machine.${g.compare ? ` This checkout's runs only (every run's are in report.json).` : ''}`);
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

const cpuUs = (r: GateRun | undefined) => (r?.perCall.apiCpuUs == null ? '-' : fmtInt(r.perCall.apiCpuUs));
const cmds = (r: GateRun | undefined) => (r?.perCall.redisCommandsPerCall == null ? '-' : r.perCall.redisCommandsPerCall.toFixed(r.perCall.redisCommandsPerCall >= 10 ? 1 : 2));
const local = (r: GateRun | undefined) => (!r || r.kind === 'noop' ? '' : r.perCall.localShare === null ? '-' : fmtPct(r.perCall.localShare));
const fix = (x: number | null, digits = 2) => (x === null ? '-' : x.toFixed(digits));

/** Per run: what a call cost coupon-api and Redis, and (a sale) the share answered in process and the sale against the no-op. */
export function renderPerCall(g: GateReport): string {
  const out: string[] = ['PER CALL'];
  const rows: string[][] = [['run', 'calls/s', 'p99 ms', 'coupon-api µs CPU/call', 'Redis cmds/call', 'in process', 'calls/s ÷ no-op', 'p99 ÷ no-op']];
  for (const runs of [g.runs, g.compare?.runs ?? []]) {
    for (const r of runs) {
      const noop = r.kind === 'issue' ? findIn(runs, r.protocol, 'noop', r.workers) : undefined;
      rows.push([r.label, fmtInt(r.callsPerSec), fmtMs(r.latencyMs.p99), cpuUs(r), cmds(r), local(r), r.kind === 'issue' ? fix(ratio(r, noop)) : '', r.kind === 'issue' ? fix(p99Ratio(r, noop)) : '']);
    }
  }
  out.push(table(rows));
  out.push('  coupon-api µs CPU/call: user + sys of its primary and workers (/proc/<pid>/stat) over the run, over the calls answered.');
  out.push('  Redis cmds/call: every command Redis ran from just before the run until (a sale) every winner was issued, over the calls answered:');
  out.push('  coupon-api\'s (each command a script runs counts), coupon-issuer\'s too, and any other client\'s of that Redis; the bench\'s own (its sampler\'s HLENs, one INFO) taken out.');
  if (!g.redis.own && g.redis.otherCommandsPerSecBefore >= 10) out.push(`  Other clients ran ${fmtInt(g.redis.otherCommandsPerSecBefore)} commands/s on that Redis just before the runs: these counts include theirs (--redis own avoids it).`);
  out.push('  in process: coupon_gate_local_answers_total over the IssueCoupon calls answered (coupon-api\'s metrics, merged across workers by the primary; "-": that code has no such metric).');
  out.push('  ÷ no-op: the sale against the no-op run of the same code, protocol and API_WORKERS (calls/s; p99 latency).');
  return out.join('\n');
}

/** --compare: this checkout's sale and the ref's side by side, per protocol and API_WORKERS, and their ratios. */
export function renderCompare(g: GateReport): string {
  const c = g.compare;
  if (!c) return '';
  const out: string[] = [`COMPARE  this checkout (${g.commit}) against ${c.ref} (${c.commit}): the same sale, settings and machine, one run (per API_WORKERS setting both codes in turn, this checkout first at the first setting, ${c.ref} first at the next)`];
  const rows: string[][] = [['sale', 'code', 'calls/s', 'p99 ms', 'coupon-api µs CPU/call', 'Redis cmds/call', 'in process', 'calls/s ÷ no-op', 'p99 ÷ no-op', 'no-op calls/s', 'no-op µs CPU/call']];
  const line = (runs: GateRun[], p: string, w: number) => {
    const sale = findIn(runs, p, 'issue', w);
    const noop = findIn(runs, p, 'noop', w);
    return { sale, noop, cells: [sale ? fmtInt(sale.callsPerSec) : '-', sale ? fmtMs(sale.latencyMs.p99) : '-', cpuUs(sale), cmds(sale), sale ? local(sale) : '-', fix(ratio(sale, noop)), fix(p99Ratio(sale, noop)), noop ? fmtInt(noop.callsPerSec) : '-', cpuUs(noop)] };
  };
  const cpuRatios: string[] = [];
  for (const p of g.settings.protocols) {
    for (const w of [...new Set([1, g.settings.workers])]) {
      const mine = line(g.runs, p, w);
      const theirs = line(c.runs, p, w);
      const m = mine.sale?.perCall;
      const t = theirs.sale?.perCall;
      const cpu = over(m?.apiCpuUs, t?.apiCpuUs);
      rows.push([`${p} W=${w}`, 'this checkout', ...mine.cells]);
      rows.push(['', c.ref, ...theirs.cells]);
      rows.push(['', `this ÷ ${c.ref}`, fix(ratio(mine.sale, theirs.sale)), fix(p99Ratio(mine.sale, theirs.sale)), fix(cpu), fix(over(m?.redisCommandsPerCall, t?.redisCommandsPerCall)),
        fix(over(m?.localShare, t?.localShare)), fix(over(ratio(mine.sale, mine.noop), ratio(theirs.sale, theirs.noop))), fix(over(p99Ratio(mine.sale, mine.noop), p99Ratio(theirs.sale, theirs.noop))),
        fix(ratio(mine.noop, theirs.noop)), fix(over(mine.noop?.perCall.apiCpuUs, theirs.noop?.perCall.apiCpuUs))]);
      if (cpu !== null) cpuRatios.push(`${p} W=${w} ${cpu.toFixed(2)}`);
    }
  }
  out.push(table(rows));
  out.push(`  coupon-api CPU per IssueCoupon, this checkout ÷ ${c.ref}: ${cpuRatios.join(', ') || '-'} (issue 18's target: ≤ 0.5 of main's).`);
  out.push(`  ${c.ref} ran from a temporary worktree (${c.worktree}) with its own ledger database and topic prefix (${c.env.KAFKA_TOPIC_PREFIX}); the Redis, Kafka and registry are shared. Columns as in PER CALL.`);
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
