// The operator's changes during the chaos run (issue 19), and what each must leave true. They take
// their turn in the fault schedule (chaos/faults.ts):
//   pause    PauseCoupon on the sale's coupon, hold, ResumeCoupon. From the pause's OK until the
//            resume is sent, the gate takes no new winner and nobody hears OK who did not already
//            hold a seq when the pause took hold (the gate's winners read right after the OK); a
//            winner asking again still hears their seq. Buyers retry COUPON_PAUSED.
//   restock  UpdateCoupon raising total_quantity by a seeded amount (an absolute total, so a repeat
//            is the same change). The model's total follows each OK; the final checks expect it:
//            issued = the new total, seqs 1..total each once, COMPLETE at the new total.
//   close    CloseCoupon on a second, separate sale that is not sold out: no reservation after its
//            closes_at, no OK for a new user after the close's OK, and the winners keep their seqs.
// A change answered UNAVAILABLE or DEADLINE_EXCEEDED is repeated until decided, as an operator would
// (each is idempotent, docs/api.md); one never decided is a CHANGE: violation. Every change answered
// OK must be in coupon_changes exactly once. Pauses take their turn among the faults; restocks and the
// close go out whatever fault is under way (chaos/faults.ts).
import * as grpc from '@grpc/grpc-js';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import { CouponStatus } from '../gen/coupon/v1/coupon_pb.js';
import { CouponCallError } from '../src/client/grpc.ts';
import { couponKeys } from '../src/store/keys.ts';
import { atSeconds, say, sleep } from './journal.ts';
import { inPool, RETRYABLE, type Buyers, type CouponClient } from './users.ts';

export interface Sale { couponId: string; quantity: number; buyers: Buyers }

interface PauseWindow {
  n: number;
  /** When PauseCoupon's OK was heard (epoch ms). */
  okMs: number;
  /** The gate's winners read right after that OK (user → seq), or undefined if the gate could not be read. */
  heldAtPause: Map<string, string> | undefined;
  /** The gate's winners read just before ResumeCoupon was sent. */
  heldAtResume: Map<string, string> | undefined;
  /** When ResumeCoupon was first sent: the pause may end from then on. */
  resumeSentMs: number;
}

interface Close { sentMs: number; okMs: number; closesAtMs: number | undefined; held: number }

interface GateView { armed: boolean; paused: boolean; total: number; winners: Map<string, string> }

interface Row { user_id: string; seq: string | number; requested_at: Date }
interface CouponRow { total_quantity: string | number; issued_count: string | number; paused_at: Date | null; closes_at: Date | null; completed_at: Date | null }

const CALL_MS = 10_000;
/** How long a change is repeated before it counts as never decided. */
const DECIDE_MS = 120_000;
/** Winners who ask again while a pause holds. */
const PROBES = 5;

const statusName = (s: CouponStatus) => CouponStatus[s] ?? String(s);

export class Lifecycle {
  /** The main sale's total_quantity as the model knows it: the quantity plus every restock answered OK. */
  total: number;
  readonly pauses: PauseWindow[] = [];
  readonly restocks: { from: number; to: number }[] = [];
  close: Close | undefined;
  readonly violations: string[] = [];
  /** Answers to the change calls, by "<rpc> <code>/<reason>". */
  readonly answers = new Map<string, number>();
  /** Changes answered OK, in order: what coupon_changes must hold. */
  private readonly changes: { couponId: string; action: 'PAUSE' | 'RESUME' | 'UPDATE' | 'CLOSE'; total?: number }[] = [];
  /** A change was never decided: the model cannot say what the ledger holds. */
  private undecided = false;
  /** A pause was asked for and its resume not (yet) answered OK. */
  private pausePending = false;
  /** The run is being torn down: a change still repeating gives up. */
  private stopping = false;
  private readonly client: CouponClient;
  private readonly redis: Redis;
  private readonly main: Sale;
  private readonly second: Sale;

  constructor(o: { client: CouponClient; redis: Redis; main: Sale; second: Sale }) {
    this.client = o.client;
    this.redis = o.redis;
    this.main = o.main;
    this.second = o.second;
    this.total = o.main.quantity;
  }

  stop(): void {
    this.stopping = true;
  }

  private count(what: string): void {
    this.answers.set(what, (this.answers.get(what) ?? 0) + 1);
  }

  /** Calls until OK (the answer) or a refusal that is not "try again" (undefined, a violation). */
  private async decide<T>(rpc: string, what: string, call: (timeoutMs: number) => Promise<T>): Promise<T | undefined> {
    const deadline = Date.now() + DECIDE_MS;
    let delayMs = 200;
    for (let calls = 1; ; calls++) {
      try {
        const res = await call(CALL_MS);
        this.count(`${rpc} OK`);
        if (calls > 1) say(`${what}: OK on call ${calls}`);
        return res;
      } catch (err) {
        if (!(err instanceof CouponCallError)) throw err;
        const answer = `${grpc.status[err.code]}/${err.reason || '-'}`;
        this.count(`${rpc} ${answer}`);
        if (!RETRYABLE.has(err.code)) {
          this.violations.push(`CHANGE:${what.replaceAll(' ', '-')}:refused-${answer}`);
          this.undecided = true;
          say(`${what}: refused with ${answer}: ${err.message}`);
          return undefined;
        }
        if (Date.now() >= deadline || this.stopping) {
          this.violations.push(`CHANGE:${what.replaceAll(' ', '-')}:undecided-after-${DECIDE_MS / 1000}s:last=${answer}`);
          this.undecided = true;
          say(`${what}: still ${answer} after ${DECIDE_MS / 1000} s; giving up`);
          return undefined;
        }
        await sleep(delayMs * (0.5 + Math.random()));
        delayMs = Math.min(2_000, delayMs * 2);
      }
    }
  }

  /** The coupon's gate as Redis holds it now, read atomically; undefined if Redis does not answer. */
  private async gate(couponId: string): Promise<GateView | undefined> {
    const k = couponKeys(couponId);
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        const res = await this.redis.multi().hgetall(k.meta).hgetall(k.winners).exec();
        const [meta, winners] = (res ?? []).map(([err, value]) => {
          if (err) throw err;
          return value as Record<string, string>;
        });
        if (!meta || !winners) throw new Error('no reply');
        return { armed: Object.keys(meta).length > 0, paused: meta.paused === '1', total: Number(meta.total), winners: new Map(Object.entries(winners)) };
      } catch {
        await sleep(500);
      }
    }
    return undefined;
  }

  async pause(holdMs: number): Promise<void> {
    const { couponId, buyers } = this.main;
    const n = this.pauses.length + 1;
    this.pausePending = true;
    const paused = await this.decide('PauseCoupon', `PauseCoupon #${n}`, (timeoutMs) => this.client.pauseCoupon({ couponId }, { timeoutMs }));
    if (!paused) return; // restoreAll resumes it
    const okMs = Date.now();
    this.changes.push({ couponId, action: 'PAUSE' });
    const atPause = await this.gate(couponId);
    if (!atPause?.armed) this.violations.push(`CHECK:pause-${n}:gate-not-readable-after-PauseCoupon-OK`);
    else if (!atPause.paused) this.violations.push(`PAUSE:${n}:gate-not-paused-after-PauseCoupon-OK`);
    const window: PauseWindow = { n, okMs, heldAtPause: atPause?.armed ? atPause.winners : undefined, heldAtResume: undefined, resumeSentMs: Number.POSITIVE_INFINITY };
    this.pauses.push(window);
    say(`pause ${n}: PauseCoupon OK (status ${statusName(paused.coupon!.status)}, ${window.heldAtPause?.size ?? '?'} users hold a seq); holding ${(holdMs / 1000).toFixed(1)} s`);

    // Winners asking again while paused still hear their seq (never COUPON_PAUSED).
    const told = buyers.winners();
    const probes = Array.from({ length: Math.min(PROBES, told.length) }, (_, i) => told[Math.floor((i * told.length) / Math.min(PROBES, told.length))]!);
    await Promise.all([
      sleep(holdMs),
      ...probes.map(async (w) => {
        const answer = await buyers.ask(w.userId, holdMs, false);
        if (answer !== 'OK' && answer !== 'GAVE_UP') this.violations.push(`PAUSE:${w.userId}:told=${w.toldSeqs.join('+')}:asked-again-while-paused-heard-${w.last}`);
      }),
    ]);

    const atResume = await this.gate(couponId);
    window.heldAtResume = atResume?.armed ? atResume.winners : undefined;
    if (!window.heldAtResume) this.violations.push(`CHECK:pause-${n}:gate-not-readable-before-ResumeCoupon`);
    window.resumeSentMs = Date.now();
    const resumed = await this.decide('ResumeCoupon', `ResumeCoupon #${n}`, (timeoutMs) => this.client.resumeCoupon({ couponId }, { timeoutMs }));
    if (!resumed) return;
    this.pausePending = false;
    this.changes.push({ couponId, action: 'RESUME' });
    const after = await this.gate(couponId);
    if (after?.armed && after.paused) this.violations.push(`PAUSE:${n}:gate-still-paused-after-ResumeCoupon-OK`);
    const refused = buyers.answers.get('FAILED_PRECONDITION/COUPON_PAUSED') ?? 0;
    say(`pause ${n}: ResumeCoupon OK after ${((Date.now() - okMs) / 1000).toFixed(1)} s (COUPON_PAUSED answers so far: ${refused})`);
  }

  /**
   * After the faults: a pause whose resume was never answered OK is resumed, and a coupon found
   * paused although every pause was resumed is a violation (and is resumed). False if it stays paused.
   */
  async resumeIfPaused(): Promise<boolean> {
    const { couponId } = this.main;
    const read = await this.decide('GetCoupon', 'GetCoupon (is the sale paused?)', (timeoutMs) => this.client.getCoupon({ couponId }, { timeoutMs }));
    const pausedAt = read?.coupon?.pausedAt;
    const isPaused = pausedAt !== undefined;
    if (!isPaused && !this.pausePending) return read !== undefined;
    if (isPaused && !this.pausePending) this.violations.push(`PAUSE:paused-after-every-pause-was-resumed(paused_at=${atSeconds(timestampDate(pausedAt).getTime())}s)`);
    const resumed = await this.decide('ResumeCoupon', 'ResumeCoupon (after the faults)', (timeoutMs) => this.client.resumeCoupon({ couponId }, { timeoutMs }));
    if (!resumed) return false;
    this.pausePending = false;
    if (isPaused) this.changes.push({ couponId, action: 'RESUME' });
    return true;
  }

  async restock(amount: number): Promise<void> {
    const { couponId } = this.main;
    const from = this.total;
    const to = from + amount;
    const res = await this.decide('UpdateCoupon', `UpdateCoupon total_quantity=${to}`, (timeoutMs) =>
      this.client.updateCoupon({ coupon: { id: couponId, totalQuantity: BigInt(to) }, updateMask: { paths: ['total_quantity'] } }, { timeoutMs }));
    if (!res) return;
    this.total = to;
    this.restocks.push({ from, to });
    this.changes.push({ couponId, action: 'UPDATE', total: to });
    const answered = Number(res.coupon?.totalQuantity ?? 0);
    if (answered !== to) this.violations.push(`RESTOCK:UpdateCoupon-OK-answered-total=${answered}≠${to}`);
    const gate = await this.gate(couponId);
    if (gate?.armed && gate.total !== to) this.violations.push(`RESTOCK:gate-total=${gate.total}≠${to}-after-UpdateCoupon-OK`);
    say(`restock: total_quantity ${from} → ${to} (accepted ${res.coupon?.acceptedCount ?? '?'}, status ${statusName(res.coupon!.status)})`);
  }

  async closeSecondSale(): Promise<void> {
    const { couponId } = this.second;
    const sentMs = Date.now();
    const res = await this.decide('CloseCoupon', 'CloseCoupon (the second sale)', (timeoutMs) => this.client.closeCoupon({ couponId }, { timeoutMs }));
    if (!res) return;
    const okMs = Date.now();
    this.changes.push({ couponId, action: 'CLOSE' });
    const gate = await this.gate(couponId);
    const closesAtMs = res.coupon?.closesAt ? timestampDate(res.coupon.closesAt).getTime() : undefined;
    this.close = { sentMs, okMs, closesAtMs, held: gate?.winners.size ?? -1 };
    if (closesAtMs === undefined) this.violations.push('CLOSE:CloseCoupon-OK-without-closes_at');
    say(`close: the second sale closed (status ${statusName(res.coupon!.status)}, ${gate?.winners.size ?? '?'} winners in its gate, ${this.second.buyers.winners().length} told OK)`);
  }

  /**
   * After the sale: the second sale's winners ask again (each must hear their seq) and, once it was
   * closed, ten fresh users ask (each must hear COUPON_CLOSED).
   */
  async finishSecondSale(): Promise<void> {
    const { buyers } = this.second;
    const winners = buyers.winners();
    await inPool(winners.map((w) => w.userId), 16, (u) => buyers.ask(u, 30_000));
    for (const w of winners) if (w.last !== 'OK') this.violations.push(`CLOSE:${w.userId}:told=${w.toldSeqs.join('+')}:asking-again-heard-${w.last}`);
    if (!this.close) return;
    const late = Array.from({ length: 10 }, (_, i) => `after-close-${i}`);
    await inPool(late, 10, (u) => buyers.ask(u, 30_000));
    for (const u of late) {
      const rec = buyers.records.get(u)!;
      if (rec.toldSeqs.length > 0) this.violations.push(`CLOSE:${u}:told=${rec.toldSeqs.join('+')}-after-the-close`);
      else if (rec.last !== 'FAILED_PRECONDITION/COUPON_CLOSED') this.violations.push(`CLOSE:${u}:heard-${rec.last}-after-the-close`);
    }
  }

  /** The exact checks of every change against the ledger, the gate and what the buyers heard. */
  async check(db: Knex): Promise<string[]> {
    const v: string[] = [];
    await this.checkMain(db, v);
    await this.checkSecond(db, v);
    if (!this.undecided) {
      for (const sale of [this.main, this.second]) {
        const rows = await db('coupon_changes').where({ coupon_id: sale.couponId }).orderBy('id').select<{ action: string; after: { total_quantity?: number | string } }[]>('action', 'after');
        // Sorted: a restock answered at the moment a resume is may be heard in either order.
        const recorded = rows.map((r) => (r.action === 'UPDATE' ? `UPDATE(${Number(r.after.total_quantity)})` : r.action)).sort().join(',') || 'none';
        const expected = this.changes.filter((c) => c.couponId === sale.couponId).map((c) => (c.action === 'UPDATE' ? `UPDATE(${c.total})` : c.action)).sort().join(',') || 'none';
        if (recorded !== expected) v.push(`CHANGE:${sale === this.main ? 'sale' : 'second-sale'}:coupon_changes=${recorded}≠answered-OK=${expected}`);
      }
    }
    // What the calls themselves found (also the reads above) first.
    return [...this.violations, ...v];
  }

  private async checkMain(db: Knex, v: string[]): Promise<void> {
    const { couponId, buyers } = this.main;
    const coupon = await db('coupons').where({ id: couponId }).first<CouponRow | undefined>('total_quantity', 'issued_count', 'paused_at', 'closes_at', 'completed_at');
    if (!coupon) return;
    const rows = await db('user_coupons').where({ coupon_id: couponId }).select<Row[]>('user_id', 'seq', 'requested_at');

    for (const w of this.pauses) {
      const span = `${atSeconds(w.okMs)}..${Number.isFinite(w.resumeSentMs) ? atSeconds(w.resumeSentMs) : 'end'}s`;
      // Nobody hears OK while paused unless they held a seq when the pause took hold.
      if (w.heldAtPause) {
        for (const ok of buyers.oks) {
          if (ok.heardMs < w.okMs || ok.heardMs > w.resumeSentMs) continue;
          const held = w.heldAtPause.get(ok.userId);
          if (held === undefined) v.push(`PAUSE:${ok.userId}:told=${ok.seq}@${atSeconds(ok.heardMs)}s-while-paused(${span})-holding-no-seq-at-the-pause`);
          else if (held !== String(ok.seq)) v.push(`PAUSE:${ok.userId}:told=${ok.seq}@${atSeconds(ok.heardMs)}s-while-paused-holding-seq=${held}`);
        }
        // The gate took no new winner.
        for (const [user, seq] of w.heldAtResume ?? []) {
          if (!w.heldAtPause.has(user)) v.push(`PAUSE:${user}:seq=${seq}:won-in-the-gate-while-paused(${span})`);
        }
      }
      // And the ledger holds no reservation made while paused (requested_at is read before it is made).
      for (const r of rows) {
        const at = r.requested_at.getTime();
        if (at > w.okMs && at < w.resumeSentMs) v.push(`PAUSE:${r.user_id}:seq=${r.seq}:reserved@${atSeconds(at)}s-while-paused(${span})`);
      }
    }
    if (coupon.paused_at !== null) v.push(`PAUSE:ledger-paused_at=${atSeconds(coupon.paused_at.getTime())}s-after-every-resume`);

    // The restocked total, and COMPLETE following it.
    const total = Number(coupon.total_quantity);
    const issued = Number(coupon.issued_count);
    if (total !== this.total) v.push(`RESTOCK:ledger-total_quantity=${total}≠model-total=${this.total}`);
    if (issued >= total && coupon.completed_at === null) v.push(`RESTOCK:issued=${issued}-of-${total}-but-completed_at-unset`);
    if (issued < total && coupon.completed_at !== null) v.push(`RESTOCK:issued=${issued}-of-${total}-but-completed_at-set`);
    const gate = await this.gate(couponId);
    if (gate?.armed && gate.total !== this.total) v.push(`RESTOCK:gate-total=${gate.total}≠model-total=${this.total}`);
    const read = await this.decide('GetCoupon', 'GetCoupon (the sale, at the end)', (timeoutMs) => this.client.getCoupon({ couponId }, { timeoutMs }));
    if (read?.coupon) {
      const c = read.coupon;
      if (Number(c.totalQuantity) !== this.total || c.status !== CouponStatus.COMPLETE) {
        v.push(`RESTOCK:GetCoupon-total=${c.totalQuantity}-status=${statusName(c.status)}≠total=${this.total}-COMPLETE`);
      }
    }
  }

  private async checkSecond(db: Knex, v: string[]): Promise<void> {
    const { couponId, buyers, quantity } = this.second;
    const coupon = await db('coupons').where({ id: couponId }).first<CouponRow | undefined>('total_quantity', 'issued_count', 'paused_at', 'closes_at', 'completed_at');
    if (!coupon) {
      v.push(`CHECK:second-sale-${couponId}-not-in-ledger`);
      return;
    }
    const rows = await db('user_coupons').where({ coupon_id: couponId }).select<Row[]>('user_id', 'seq', 'requested_at');
    const byUser = new Map(rows.map((r) => [r.user_id, r]));
    // I1–I3 on the second sale.
    if (rows.length > quantity) v.push(`I1:second-sale:rows=${rows.length}>Q=${quantity}`);
    if (Number(coupon.issued_count) !== rows.length) v.push(`I1:second-sale:issued_count=${coupon.issued_count}≠rows=${rows.length}`);
    const seqs = new Map<number, string[]>();
    for (const r of rows) {
      const seq = Number(r.seq);
      if (seq < 1 || seq > quantity) v.push(`I1:second-sale:${r.user_id}:seq=${seq}-outside-1..${quantity}`);
      seqs.set(seq, [...(seqs.get(seq) ?? []), r.user_id]);
    }
    for (const [seq, users] of seqs) if (users.length > 1) v.push(`I2:second-sale:seq=${seq}:rows-for-${users.join('+')}`);
    for (const w of buyers.winners()) {
      const row = byUser.get(w.userId);
      if (!row) v.push(`I3:second-sale:${w.userId}:told=${w.toldSeqs.join('+')}:no-ledger-row`);
      else if (w.toldSeqs.length > 1 || w.toldSeqs[0] !== Number(row.seq)) v.push(`I3:second-sale:${w.userId}:told=${w.toldSeqs.join('+')}:ledger-seq=${row.seq}`);
    }
    const gate = await this.gate(couponId);
    if (gate?.armed) {
      for (const r of rows) if (gate.winners.get(r.user_id) !== String(r.seq)) v.push(`I2:second-sale:${r.user_id}:ledger-seq=${r.seq}:redis-gate-seq=${gate.winners.get(r.user_id) ?? 'none'}`);
      for (const [user, seq] of gate.winners) if (!byUser.has(user)) v.push(`I4:second-sale:${user}:redis-gate-seq=${seq}:no-ledger-row`);
    }

    if (!this.close) return;
    // The close: its closes_at is a moment of the call, no reservation is from after it, and no call
    // sent after its OK made a new winner.
    const closesAt = coupon.closes_at?.getTime();
    if (closesAt === undefined) {
      v.push('CLOSE:ledger-closes_at-unset-after-CloseCoupon-OK');
      return;
    }
    if (closesAt < this.close.sentMs || closesAt > this.close.okMs) v.push(`CLOSE:ledger-closes_at=${atSeconds(closesAt)}s-outside-the-call(${atSeconds(this.close.sentMs)}..${atSeconds(this.close.okMs)}s)`);
    if (this.close.closesAtMs !== undefined && this.close.closesAtMs !== closesAt) v.push(`CLOSE:answered-closes_at=${atSeconds(this.close.closesAtMs)}s≠ledger=${atSeconds(closesAt)}s`);
    for (const r of rows) {
      const at = r.requested_at.getTime();
      if (at >= closesAt) v.push(`CLOSE:${r.user_id}:seq=${r.seq}:reserved@${atSeconds(at)}s-after-closes_at=${atSeconds(closesAt)}s`);
    }
    for (const ok of buyers.oks) {
      if (ok.sentMs <= this.close.okMs) continue;
      const row = byUser.get(ok.userId);
      if (row && row.requested_at.getTime() >= closesAt) v.push(`CLOSE:${ok.userId}:told=${ok.seq}@${atSeconds(ok.heardMs)}s-won-after-the-close`);
    }
    if (coupon.completed_at !== null) v.push(`CLOSE:second-sale-completed-with-${rows.length}-of-${quantity}`);
    const read = await this.decide('GetCoupon', 'GetCoupon (the second sale, at the end)', (timeoutMs) => this.client.getCoupon({ couponId }, { timeoutMs }));
    if (read?.coupon && read.coupon.status !== CouponStatus.CLOSED) v.push(`CLOSE:GetCoupon-status=${statusName(read.coupon.status)}≠CLOSED`);
  }

  summary(): string[] {
    const closed = this.close ? `closed at +${atSeconds(this.close.okMs)}s with ${this.second.buyers.winners().length} users told OK` : 'not closed';
    const histogram = [...this.answers].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}=${n}`).join(', ') || 'none';
    return [
      `operator: ${this.pauses.length} pauses (${this.pauses.map((p) => `+${atSeconds(p.okMs)}..${Number.isFinite(p.resumeSentMs) ? atSeconds(p.resumeSentMs) : '?'}s`).join(', ') || 'none'}), restocks ${this.restocks.map((r) => `${r.from}→${r.to}`).join(', ') || 'none'}; second sale ${this.second.couponId} ${closed}`,
      `operator calls: ${histogram}`,
    ];
  }
}
