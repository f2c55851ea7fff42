// Rebuilding a coupon's gate from the ledger after Redis lost it (it keeps nothing on disk). A
// coupon whose keys expired after its retention (docs/architecture.md#retention) is answered from the ledger
// instead, and never armed again.
//
// The ledger is streamed a page at a time in seq order (store/coupons.ts ledgerPages) into short
// script calls of at most CHUNK items each (gate-load.ts GateLoad): the process holds one page,
// never the coupon, and Redis is never blocked by one long call (docs/design.md#growth).
import type { Redis } from '../store/redis.ts';
import { isUuid } from '../domain/ids.ts';
import type { Logger } from '../log.ts';
import { gateRebuilds } from '../metrics/gate.ts';
import type { Db } from '../store/db.ts';
import { findCoupon, findUserCoupon, ledgerPages, LEDGER_PAGE, type CouponRow } from '../store/coupons.ts';
import type { CouponScripts } from '../store/scripts.ts';
import { DomainError, LoadInterrupted } from '../domain/errors.ts';
import { gateLoad, gateMetaOf, type GateMeta, type ReserveResult } from './gate-scripts.ts';
import type { RebuildGuard } from '../store/loss-guard.ts';

export interface GateRebuildDeps {
  db: Db;
  redis: Redis;
  scripts: CouponScripts;
  log: Logger;
  /**
   * Says when the ledger can be trusted for this coupon: no publish from before the loss can still
   * land, the issuer has recorded what did, and no dead letter still owns a seq (store/loss-guard.ts).
   */
  guard: RebuildGuard;
  /** Ledger rows per page (default LEDGER_PAGE). */
  ledgerPageSize?: number;
  now?: () => number;
}

// Loads started over after Redis lost state mid-load, within one request, before it gives up.
const MAX_LOAD_ATTEMPTS = 3;

/** What a rebuild found: the gate is armed (here or by another process), no such coupon, or a coupon past its retention. */
type Rebuilt = { kind: 'ARMED' } | { kind: 'UNKNOWN' } | { kind: 'RETIRED'; row: CouponRow };

export class GateRebuilder {
  private readonly d: GateRebuildDeps;
  private readonly now: () => number;
  /** One rebuild per coupon at a time in this process, however many requests find it missing. */
  private readonly arming = new Map<string, Promise<Rebuilt>>();
  constructor(deps: GateRebuildDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
  }

  /**
   * IssueCoupon found no gate for the coupon. 'ARMED' once it is rebuilt from the ledger (ask the
   * gate again); otherwise the answer without a gate: NOT_FOUND for an unknown coupon, and, for a
   * coupon past its retention, the ledger's answer, so a finished coupon is never armed again.
   */
  async arm(couponId: string, userId: string): Promise<'ARMED' | ReserveResult> {
    let pending = this.arming.get(couponId);
    if (!pending) {
      pending = this.rebuild(couponId).finally(() => this.arming.delete(couponId));
      this.arming.set(couponId, pending);
    }
    const rebuilt = await pending;
    if (rebuilt.kind === 'ARMED') return 'ARMED';
    if (rebuilt.kind === 'UNKNOWN') return { status: 'NOT_FOUND' };
    return this.answerFromLedger(rebuilt.row, userId);
  }

  private async rebuild(couponId: string): Promise<Rebuilt> {
    if (!isUuid(couponId)) return { kind: 'UNKNOWN' };
    const row = await findCoupon(this.d.db, couponId);
    if (!row) return { kind: 'UNKNOWN' };
    const meta = gateMetaOf(row, this.d.scripts.retentionMs);
    // Past its retention deadline, its keys expired on purpose: arming it again would keep it forever.
    const retired = () => meta.expireAtMs > 0 && this.now() >= meta.expireAtMs;
    if (retired()) return { kind: 'RETIRED', row };
    let loaded: { rows: number; armed: boolean } | undefined;
    for (let attempt = 1; !loaded; attempt++) {
      // Waits out publishes from before the loss, the issuer's catch-up and dead letters (or throws
      // BACKEND_UNAVAILABLE saying which); PRESENT when another process armed the gate meanwhile.
      const ready = await this.d.guard.ready(couponId);
      if (ready.status === 'PRESENT') return { kind: 'ARMED' };
      try {
        loaded = await this.load(couponId, meta, ready.epoch);
      } catch (err) {
        // Redis lost state again during the load: nothing was armed. Start over, from the wait:
        // the guard notices the new loss (and refuses until it has settled).
        if (!(err instanceof LoadInterrupted)) throw err;
        this.d.log.warn({ couponId, attempt }, err.message);
        if (attempt >= MAX_LOAD_ATTEMPTS) throw new DomainError('BACKEND_UNAVAILABLE', 'Redis kept losing this coupon\'s gate state while it was rebuilt from the ledger; retry shortly', { coupon_id: couponId }, err);
      }
    }
    await this.d.guard.rebuilt(couponId);
    this.d.log.warn({ couponId, issued: loaded.rows, armedHere: loaded.armed }, 'gate state was missing; rebuilt from the ledger');
    if (loaded.armed) gateRebuilds.inc();
    // A deadline that passed during a long rebuild took the keys with it at once.
    return retired() ? { kind: 'RETIRED', row } : { kind: 'ARMED' };
  }

  /**
   * Streams the ledger into the gate page by page, then arms it; stops early if another process
   * armed it first. Throws LoadInterrupted when Redis lost state meanwhile (or the loss marker
   * `epoch` is gone before it starts).
   */
  private async load(couponId: string, meta: GateMeta, epoch: string | undefined): Promise<{ rows: number; armed: boolean }> {
    const gate = gateLoad(this.d.scripts, couponId, meta, { epoch });
    let rows = 0;
    for await (const page of ledgerPages(this.d.db, couponId, this.d.ledgerPageSize ?? LEDGER_PAGE)) {
      if (!(await gate.rows(page))) return { rows, armed: false };
      rows += page.length;
    }
    return { rows, armed: await gate.arm() };
  }

  /**
   * The gate's answer for a coupon past its retention, from the ledger alone (the issuer has caught
   * up, and such a coupon takes no new requests): a winner learns their seq, as from the gate; anyone
   * else hears why not, in the gate's order (closed before sold out).
   */
  private async answerFromLedger(row: CouponRow, userId: string): Promise<ReserveResult> {
    const held = await findUserCoupon(this.d.db, row.id, userId);
    if (held) return { status: 'EXISTING', seq: held.seq, state: held.order_id ? 'REDEEMED' : 'ISSUED', unacked: false };
    if (row.closes_at && this.now() >= row.closes_at.getTime()) return { status: 'CLOSED' };
    return { status: 'SOLD_OUT' };
  }
}
