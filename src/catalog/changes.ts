// An operator's changes to a live coupon: UpdateCoupon, PauseCoupon, ResumeCoupon, CloseCoupon
// (docs/operations.md#change-a-live-sale). The ledger is the source of truth and is written first:
// in one transaction the coupon row is locked, changed and audited, then one Lua script applies the
// change to the gate (store/lua/gate-change.lua, atomic against every IssueCoupon in flight), and
// the transaction commits only once the gate took it. A refusal by the gate (a total below the seqs
// handed out) rolls the ledger back; a Redis loss afterwards rebuilds the changed coupon.
import { DomainError, invalidField } from '../domain/errors.ts';
import type { Logger } from '../log.ts';
import type { Db } from '../store/db.ts';
import { lockCoupon, writeCouponChange, type ChangeAction, type CouponFields } from '../store/coupon-changes.ts';
import type { CouponRow } from '../store/coupons.ts';
import { retentionDeadline } from '../domain/retention.ts';
import type { CouponScripts } from '../store/scripts.ts';
import { gateChange as changeGate, type GateChange } from '../gate/gate-scripts.ts';
import { couponNotFound } from './catalog.ts';

/** What UpdateCoupon may change (update_mask paths); undefined = not in the mask, null = unset. */
export interface CouponPatch { name?: string; closesAt?: Date | null; validUntil?: Date | null; totalQuantity?: number }

export interface CouponChangesDeps {
  db: Db;
  scripts: CouponScripts;
  log: Logger;
  /**
   * Makes sure the coupon's gate is in Redis (a rebuild after a loss, UNAVAILABLE while it waits),
   * so a change is checked against the live gate: 'RETIRED' for a coupon past its retention, whose
   * gate is never armed again; 'UNKNOWN' for no such coupon.
   */
  ensureGate(couponId: string): Promise<'ARMED' | 'RETIRED' | 'UNKNOWN'>;
  now?: () => number;
  /** Testing only (FAILPOINT=fail-change-after-gate): fail after the gate took the change, before the ledger records it. */
  failAfterGate?: boolean;
}

const fieldsOf = (r: CouponRow): CouponFields => ({
  name: r.name, total_quantity: r.total_quantity, closes_at: r.closes_at, valid_until: r.valid_until, paused_at: r.paused_at, completed_at: r.completed_at,
});
const sameTime = (a: Date | null, b: Date | null) => (a?.getTime() ?? null) === (b?.getTime() ?? null);

export class CouponChanges {
  private readonly d: CouponChangesDeps;
  private readonly now: () => number;
  constructor(deps: CouponChangesDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
  }

  update(couponId: string, patch: CouponPatch, by: string): Promise<CouponRow> {
    return this.change(couponId, 'UPDATE', by, (row) => {
      const next: CouponFields = { ...fieldsOf(row) };
      if (patch.name !== undefined) next.name = patch.name;
      if (patch.closesAt !== undefined) next.closes_at = patch.closesAt;
      if (patch.validUntil !== undefined) next.valid_until = patch.validUntil;
      if (patch.totalQuantity !== undefined) next.total_quantity = patch.totalQuantity;
      // The window rules CreateCoupon applies, on the coupon as it would be.
      if (next.closes_at && next.closes_at <= row.opens_at) throw invalidField('closes_at', 'must be after opens_at');
      if (next.valid_until && next.valid_until <= row.opens_at) throw invalidField('valid_until', 'must be after opens_at');
      if (next.valid_until && next.closes_at && next.valid_until < next.closes_at) {
        throw invalidField(patch.validUntil !== undefined ? 'valid_until' : 'closes_at', 'valid_until must not be before closes_at');
      }
      // A lowering is judged by the gate alone (gate-change.lua): its floor is the highest seq handed
      // out, never below the ledger's count, which lags the winners the issuer has yet to write.
      return next;
    });
  }

  pause(couponId: string, by: string): Promise<CouponRow> {
    return this.change(couponId, 'PAUSE', by, (row) => ({ ...fieldsOf(row), paused_at: row.paused_at ?? new Date(this.now()) }));
  }

  resume(couponId: string, by: string): Promise<CouponRow> {
    return this.change(couponId, 'RESUME', by, (row) => ({ ...fieldsOf(row), paused_at: null }));
  }

  /** closes_at becomes now (or opens_at, for a coupon not open yet: it never opens), unless already past. */
  close(couponId: string, by: string): Promise<CouponRow> {
    return this.change(couponId, 'CLOSE', by, (row) => {
      const now = this.now();
      if (row.closes_at && row.closes_at.getTime() <= now) return fieldsOf(row);
      return { ...fieldsOf(row), closes_at: new Date(Math.max(now, row.opens_at.getTime())) };
    });
  }

  private async change(couponId: string, action: ChangeAction, by: string, apply: (row: CouponRow) => CouponFields): Promise<CouponRow> {
    const gate = await this.d.ensureGate(couponId);
    if (gate === 'UNKNOWN') throw couponNotFound(couponId);
    // The gate's state to put back if the ledger does not commit after the gate took the change
    // (a lost reply, a failed write or commit); undefined while the gate cannot hold the change.
    let undo: GateChange | undefined;
    const putBack = async () => {
      if (!undo) return;
      const state = undo;
      undo = undefined;
      await changeGate(this.d.scripts, couponId, state).catch((err: unknown) => {
        this.d.log.error({ couponId, action, err: (err as Error).message }, "could not put the gate back after a change the ledger did not take; repeat the change or the opposite one to re-sync it");
      });
    };
    try {
      return await this.d.db.transaction(async (trx) => {
        const row = await lockCoupon(trx, couponId);
        if (!row) throw couponNotFound(couponId);
        const before = fieldsOf(row);
        const after = apply(row);
        // Completion follows the total: a restock reopens a complete coupon, a cut to the issued count completes it.
        if (after.total_quantity > row.issued_count) after.completed_at = null;
        else after.completed_at ??= new Date(this.now());
        const changed = (keys: readonly (keyof CouponFields)[]) => keys.some((k) => !same(before[k], after[k]));
        const ledgerChanges = changed(FIELDS);
        if (gate === 'RETIRED') {
          if (changed(FIELDS.filter((k) => k !== 'name'))) throw new DomainError('COUPON_FINISHED', 'the coupon is past its retention: its sale and redemptions are over, and only its name can change', { coupon_id: couponId });
        } else {
          // A deadline already past would delete every key of the coupon at once, winners and
          // journals included, and the change could not be undone (a coupon past its retention
          // takes no more changes).
          const deadline = retentionDeadline(after, this.d.scripts.retentionMs);
          if (deadline > 0 && deadline <= this.now()) {
            throw invalidField(sameTime(after.valid_until, before.valid_until) ? 'closes_at' : 'valid_until', "the coupon's retention would end at once (max(closes_at, valid_until) + REDIS_RETENTION is past), deleting its state: pick a later time");
          }
          // The gate always takes the whole state the ledger will hold, also on a repeat that changes
          // nothing in the ledger: a repeat of a change whose first answer was lost re-syncs a gate
          // that kept it.
          undo = gateStateOf(before, this.d.scripts.retentionMs);
          const result = await changeGate(this.d.scripts, couponId, gateStateOf(after, this.d.scripts.retentionMs));
          if (result.status !== 'CHANGED') undo = undefined;
          if (result.status === 'BELOW_ACCEPTED') throw belowAccepted(couponId, result.floor);
          if (result.status === 'NOT_ARMED') {
            throw new DomainError('BACKEND_UNAVAILABLE', "Redis lost the coupon's gate during the change; nothing changed; retry", { coupon_id: couponId });
          }
        }
        if (!ledgerChanges) {
          undo = undefined;
          return row; // nothing to change: an OK no-op, not audited
        }
        try {
          if (this.d.failAfterGate) throw Object.assign(new Error('FAILPOINT fail-change-after-gate: the ledger write failed'), { code: '08006' });
          await writeCouponChange(trx, couponId, action, by, before, after);
        } catch (err) {
          // Put back while this transaction still holds the row: no other change can come between.
          await putBack();
          throw err;
        }
        this.d.log.info({ couponId, action, by, before, after }, 'coupon changed');
        return { ...row, ...after };
      });
    } catch (err) {
      await putBack();
      throw err;
    } finally {
      undo = undefined;
    }
  }
}

/** The gate's part of a coupon's ledger fields, whole (gate-change.lua sets each of them). */
const gateStateOf = (f: CouponFields, retentionMs: number): GateChange => ({
  total: f.total_quantity,
  closesMs: f.closes_at?.getTime() ?? 0,
  validUntilMs: f.valid_until?.getTime() ?? 0,
  paused: f.paused_at !== null,
  expireAtMs: retentionDeadline(f, retentionMs),
});

const FIELDS = ['name', 'total_quantity', 'closes_at', 'valid_until', 'paused_at', 'completed_at'] as const satisfies readonly (keyof CouponFields)[];
const same = (a: unknown, b: unknown) => (a instanceof Date || b instanceof Date ? sameTime(a as Date | null, b as Date | null) : a === b);

const belowAccepted = (couponId: string, floor: number) =>
  new DomainError('QUANTITY_BELOW_ACCEPTED', `total_quantity cannot go below ${floor}: the gate has handed out seqs up to it`, { coupon_id: couponId, floor: String(floor) });
