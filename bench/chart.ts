// chart.html: one self-contained page (inline SVG, no scripts, no network). Per run: latency over
// time (p50, p99 and max of the calls answered in each 250 ms), and for gate runs the winners in
// Redis, the OK answers the generator saw, and the rows issued in Postgres over time (polled every
// 100 ms).
import type { GateReport, GateRun } from './gate.ts';
import { fmtInt, fmtMs } from './stats.ts';

interface Series { name: string; color: string; points: [number, number][]; dash?: string }

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function lineChart(title: string, series: Series[], xLabel: string, yLabel: string): string {
  const W = 560; const H = 270; const L = 64; const R = 12; const T = 44; const B = 40;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xMax = niceMax(Math.max(1, ...xs));
  const yMax = niceMax(Math.max(0, ...ys));
  const x = (v: number) => L + (v / xMax) * (W - L - R);
  const y = (v: number) => H - B - (v / yMax) * (H - T - B);
  const parts: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`];
  parts.push(`<text x="${L}" y="16" font-size="13" font-weight="bold">${esc(title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const yv = (yMax * i) / 5; const xv = (xMax * i) / 5;
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${y(yv)}" y2="${y(yv)}" stroke="#ddd"/>`);
    parts.push(`<text x="${L - 4}" y="${y(yv) + 4}" text-anchor="end">${yMax >= 100 ? fmtInt(yv) : fmtMs(yv)}</text>`);
    parts.push(`<text x="${x(xv)}" y="${H - B + 14}" text-anchor="middle">${(xv / 1000).toFixed(xMax >= 5000 ? 0 : 1)}</text>`);
  }
  parts.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/><line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`);
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, j) => `${j === 0 ? 'M' : 'L'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    parts.push(`<rect x="${L + 10 + i * 130}" y="${T - 14}" width="10" height="3" fill="${s.color}"/><text x="${L + 24 + i * 130}" y="${T - 9}">${esc(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

function runSection(r: GateRun): string {
  const lat = lineChart(`${r.label}: latency`, [
    { name: 'p50', color: '#1f77b4', points: r.series.latency.map((b) => [b.tMs, b.p50]) },
    { name: 'p99', color: '#ff7f0e', points: r.series.latency.map((b) => [b.tMs, b.p99]) },
    { name: 'max', color: '#d62728', points: r.series.latency.map((b) => [b.tMs, b.max]), dash: '4 3' },
  ], `seconds since the generator started (calls by answer time, ${r.series.latencyBucketMs} ms slices)`, 'ms');
  let issue = '';
  if (r.issuance) {
    issue = lineChart(`${r.label}: accepted vs issued`, [
      { name: 'winners (Redis)', color: '#2ca02c', points: r.series.samples.map((p) => [p.tMs, p.winners]) },
      ...(r.series.okAnswers.length ? [{ name: 'OK answers seen', color: '#9467bd', points: r.series.okAnswers.map((p): [number, number] => [p.tMs, p.accepted]), dash: '5 3' }] : []),
      { name: 'issued (Postgres)', color: '#8c564b', points: r.series.samples.map((p) => [p.issuedTMs, p.issued]) },
    ], 'seconds since the generator started (polled every 100 ms)', 'coupons');
  }
  const i = r.issuance;
  const caption = `${fmtInt(r.callsPerSec)} calls/s · p50 ${fmtMs(r.latencyMs.p50)} · p99 ${fmtMs(r.latencyMs.p99)} · max ${fmtMs(r.latencyMs.max)} ms` +
    (i ? ` · all ${fmtInt(i.expected)} issued ${i.firstCallToIssuedMs === null ? 'never' : `${fmtInt(i.firstCallToIssuedMs)} ms after the first call`} · verdict ${i.verdict.pass ? 'pass' : 'FAIL'}` : '');
  return `<section><h2>${esc(r.label)}</h2><p>${esc(caption)}</p><div class="row">${lat}${issue}</div></section>`;
}

export function chartHtml(g: GateReport, title: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>body{font-family:sans-serif;margin:16px;color:#222}section{margin-bottom:18px}.row{display:flex;flex-wrap:wrap;gap:12px}h2{font-size:15px;margin:6px 0}p{margin:2px 0 6px;font-size:12px}</style></head>
<body><h1 style="font-size:18px">${esc(title)}</h1>
<p>Q ${fmtInt(g.settings.quantity)} · U ${fmtInt(g.settings.users)} · R ${fmtInt(g.settings.requests)} · C ${fmtInt(g.settings.connections)} · LOG_LEVEL ${esc(g.settings.logLevel)}</p>
${g.runs.map(runSection).join('\n')}
</body></html>
`;
}
