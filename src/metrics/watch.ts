// The frame `npm run watch` draws each second: one coupon's counts from GetCoupon, and the two
// processes' /metrics read as an operator would read a dashboard.
import { CouponStatus, type Coupon } from '../../gen/coupon/v1/coupon_pb.js';
import { GATE_OUTCOMES } from './gate.ts';
import { sumOf, type Sample } from './text-format.ts';

/** One round of reading: the scrapes, or why each failed. */
export interface Reading { atMs: number; api: Sample[] | Error; issuer: Sample[] | Error }

export interface WatchNames { issueTopic: string; issuerGroup: string; dltTopics: string[] }

const BAR = 30;

function bar(label: string, n: number, total: number): string {
  const share = total > 0 ? Math.min(1, n / total) : 0;
  const filled = Math.round(share * BAR);
  const of = total.toLocaleString('en-US');
  return `  ${label.padEnd(9)} [${'█'.repeat(filled)}${'░'.repeat(BAR - filled)}] ${n.toLocaleString('en-US').padStart(of.length)} / ${of}  ${(share * 100).toFixed(1)}%`;
}

const fromIssuer = (r: Reading, f: (s: Sample[]) => string) => (r.issuer instanceof Error ? `unreachable (${r.issuer.message})` : f(r.issuer));

export function renderFrame(coupon: Coupon, now: Reading, before: Reading | undefined, names: WatchNames): string {
  const total = Number(coupon.totalQuantity);
  const lines = [
    `coupon ${coupon.id}  "${coupon.name}"  ${CouponStatus[coupon.status] ?? coupon.status}   ${new Date(now.atMs).toISOString().slice(11, 19)}`,
    bar('accepted', Number(coupon.acceptedCount), total),
    bar('issued', Number(coupon.issuedCount), total),
  ];

  // Gate decisions are counted over all coupons (a label per coupon would not scale).
  if (now.api instanceof Error) {
    lines.push(`  gate/s    coupon-api metrics unreachable (${now.api.message})`);
  } else {
    const api = now.api;
    const previous = before && !(before.api instanceof Error) ? before.api : undefined;
    const seconds = before ? (now.atMs - before.atMs) / 1000 : 0;
    const rates = GATE_OUTCOMES.map((outcome) => {
      const count = sumOf(api, 'coupon_gate_decisions_total', { outcome });
      const rate = previous && seconds > 0 ? ((count - sumOf(previous, 'coupon_gate_decisions_total', { outcome })) / seconds).toFixed(1) : '–';
      return `${outcome} ${rate}`;
    });
    lines.push(`  gate/s    ${rates.join('  ')}   (all coupons)`);
  }

  lines.push(`  lag       ${fromIssuer(now, (s) => `${sumOf(s, 'kafka_consumergroup_lag', { consumergroup: names.issuerGroup, topic: names.issueTopic })} records on ${names.issueTopic} not yet issued (group ${names.issuerGroup})`)}`);
  lines.push(`  dead      ${fromIssuer(now, (s) => {
    const sent = sumOf(s, 'coupon_dead_lettered_records_total');
    const waiting = names.dltTopics.reduce((n, topic) => n + sumOf(s, 'kafka_consumergroup_lag', { topic }), 0);
    return `${sent} dead-lettered since coupon-issuer started, ${waiting} waiting on dead-letter topics${waiting > 0 ? ' (npm run dlt:replay)' : ''}`;
  })}`);
  return lines.join('\n');
}

/** A time the way the list shows it: UTC to the second. */
const at = (ts: { seconds: bigint } | undefined) => (ts ? `${new Date(Number(ts.seconds) * 1_000).toISOString().slice(0, 19).replace('T', ' ')}Z` : 'never');

/**
 * What `npm run watch` without an id prints: the open coupons, numbered from 1, newest first, with
 * what an operator picks by (name, counts, when the gate closes). `more`: the list is cut there.
 */
export function renderCouponList(coupons: Coupon[], more: boolean): string {
  if (coupons.length === 0) return 'no open coupons';
  const width = String(coupons.length).length;
  const lines = ['open coupons, newest first:'];
  coupons.forEach((c, i) => {
    const total = Number(c.totalQuantity);
    lines.push(`  ${String(i + 1).padStart(width)}  ${c.id}  "${c.name}"  accepted ${Number(c.acceptedCount).toLocaleString('en-US')} / ${total.toLocaleString('en-US')}  closes ${at(c.closesAt)}`);
  });
  if (more) lines.push(`  … and more: only the newest ${coupons.length} are shown`);
  return lines.join('\n');
}
