// coupon.v1.issued: tells downstream services about every coupon the issuer wrote to the ledger
// (docs/architecture.md#announcing-issued-coupons, the promise in docs/events.md#issued-coupons).
//
// The obligation is in the ledger, not in this process: the statement that inserts a user_coupons
// row also writes its row in coupon_issued_outbox (store/ledger.ts). After the commit, issueBatch
// hands the rows it inserted to `announce`, which publishes them and clears their outbox rows once
// Kafka acknowledged them. Whatever that does not finish (the process died after the commit, the
// publish failed) stays in the outbox, and the periodic pass (`sweep`) republishes it once it is
// older than RECOVERY_STALE_MS. A redelivered issue record inserts nothing, so owes nothing: it is
// never announced a second time. Every delivery of one row's announcement carries the same
// event_id, so a duplicate (a republish of an event whose ack was lost) is recognisable.
import { createHash } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { CouponIssuedSchema, type CouponIssued } from '../../gen/coupon/events/v1/issued_pb.js';
import type { Alerter } from '../events/alert.ts';
import type { EventCodec } from '../events/registry.ts';
import { OUTAGE_ALERT_AFTER } from '../events/retry-policy.ts';
import { every, type Loop } from '../lib/every.ts';
import type { Logger } from '../log.ts';
import { issuerAnnounced, issuerUnannounced, issuerUnannouncedAge } from '../metrics/issuer.ts';
import type { Db } from '../store/db.ts';
import { clearAnnouncements, lockStaleAnnouncements, owedAnnouncements, type OwedAnnouncement } from '../store/issued-outbox.ts';

/** The UUIDv5 namespace of CouponIssued event ids (docs/events.md#issued-coupons). Never change it. */
export const ISSUED_EVENT_NAMESPACE = '68a193ad-aeee-4334-accf-62e9cd85afdc';

/** A name-based UUID (RFC 9562 §5.5: SHA-1, version 5) of `name` in `namespace`. */
export function uuidV5(namespace: string, name: string): string {
  const hash = createHash('sha1').update(Buffer.from(namespace.replaceAll('-', ''), 'hex')).update(name, 'utf8').digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The event id of one ledger row's announcement: the same on every delivery, different for every
 * other row. The user is part of it, so that a seq a person reassigned by hand is a new event.
 * Coupon ids hold no ':' and seqs are digits, so the name is unambiguous.
 */
export const issuedEventId = (couponId: string, seq: number | bigint, userId: string) => uuidV5(ISSUED_EVENT_NAMESPACE, `${couponId}:${seq}:${userId}`);

/** The CouponIssued of one ledger row. */
export function issuedEvent(row: OwedAnnouncement): CouponIssued {
  return create(CouponIssuedSchema, {
    couponId: row.coupon_id,
    userId: row.user_id,
    seq: BigInt(row.seq),
    issuedAt: timestampFromDate(row.issued_at),
    eventId: issuedEventId(row.coupon_id, row.seq, row.user_id),
  });
}

/** Rows the outbox pass takes at a time (one transaction, one publish of all of them). */
const SWEEP_PAGE = 1_000;

export interface AnnouncerDeps {
  db: Db;
  /** The batching publisher's send (events/publisher.ts): resolves once Kafka acknowledged the record. */
  send: (topic: string, message: { key: string; value: Buffer }) => Promise<void>;
  codec: EventCodec<typeof CouponIssuedSchema>;
  alerter: Alerter;
  log: Logger;
}

export interface Announcer {
  /** After the ledger commit: publishes these rows' events, in the background, and clears them once acknowledged. */
  announce(rows: readonly OwedAnnouncement[]): void;
  /** One pass over announcements owed for longer than `staleMs`: republishes them. Returns how many Kafka acknowledged. */
  sweep(staleMs: number): Promise<number>;
  /** Stops the periodic pass, and waits for the announcements and the pass in flight. */
  stop(): Promise<void>;
}

/** An Announcer whose pass runs every `intervalMs` on announcements owed for longer than `staleMs`. */
export function startAnnouncer(d: AnnouncerDeps, o: { intervalMs: number; staleMs: number }): Announcer {
  const inFlight = new Set<Promise<void>>();
  let sweeping: Promise<number> | undefined;
  // Passes whose publish failed in a row, for the outage alert (the consumers' rule: 5 in a row).
  let failedPasses = 0;
  let outageSince = 0;
  let alerted = false;

  /** Publishes the rows; returns those Kafka acknowledged and the first failure, if any. */
  const publish = async (rows: readonly OwedAnnouncement[]) => {
    const sent = await Promise.allSettled(rows.map((row) => d.send(d.codec.topic, { key: row.user_id, value: d.codec.encode(issuedEvent(row)) })));
    const acked = rows.filter((_, i) => sent[i]!.status === 'fulfilled');
    const failure = sent.find((s): s is PromiseRejectedResult => s.status === 'rejected')?.reason as Error | undefined;
    return { acked, failure };
  };

  const announce = (rows: readonly OwedAnnouncement[]) => {
    if (rows.length === 0) return;
    const work = (async () => {
      const { acked, failure } = await publish(rows);
      issuerAnnounced.inc({ path: 'inline' }, acked.length);
      await clearAnnouncements(d.db, acked);
      if (failure) d.log.warn({ err: failure.message, failed: rows.length - acked.length }, 'could not announce issued coupons; the outbox pass republishes them');
    })().catch((err: unknown) => {
      // Published, but not cleared (PostgreSQL): the pass republishes them, with the same event ids.
      d.log.warn({ err: (err as Error).message, rows: rows.length }, 'could not clear announced coupons from the outbox; the outbox pass republishes them');
    }).finally(() => inFlight.delete(work));
    inFlight.add(work);
  };

  const pass = async (staleMs: number): Promise<number> => {
    let announced = 0;
    let failure: Error | undefined;
    for (;;) {
      const page = await d.db.transaction(async (trx) => {
        const rows = await lockStaleAnnouncements(trx, staleMs, SWEEP_PAGE);
        const result = await publish(rows);
        await clearAnnouncements(trx, result.acked);
        return { taken: rows.length, ...result };
      });
      announced += page.acked.length;
      issuerAnnounced.inc({ path: 'republished' }, page.acked.length);
      if (page.failure) { failure = page.failure; break; }
      if (page.taken < SWEEP_PAGE) break;
    }
    const owed = await owedAnnouncements(d.db);
    issuerUnannounced.set(owed.rows);
    issuerUnannouncedAge.set(owed.oldest ? Math.max(0, (Date.now() - owed.oldest.getTime()) / 1000) : 0);
    if (announced > 0) d.log.warn({ republished: announced }, 'republished issued coupons whose announcement had not finished');
    await account(failure);
    return announced;
  };

  // A publish that keeps failing is an outage (docs/design.md#outages-versus-poison): every pass
  // tries again, nothing is dropped, and after OUTAGE_ALERT_AFTER failed passes in a row the alert
  // goes out once, with the recovery when a pass succeeds. A pass that cannot reach PostgreSQL
  // throws before this: the consumers raise that outage.
  const account = async (failure: Error | undefined) => {
    if (!failure) {
      if (alerted) await d.alerter.recovered({ topic: d.codec.topic, attempts: failedPasses, outageMs: Date.now() - outageSince });
      failedPasses = 0;
      alerted = false;
      return;
    }
    if (failedPasses++ === 0) outageSince = Date.now();
    d.log.warn({ err: failure.message, attempt: failedPasses }, 'could not republish issued coupons; the next pass tries again');
    if (failedPasses >= OUTAGE_ALERT_AFTER && !alerted) {
      alerted = true;
      await d.alerter.outage({ topic: d.codec.topic, attempts: failedPasses, error: failure.message, during: 'announcing issued coupons' });
    }
  };

  const sweep = (staleMs: number) => {
    const run = pass(staleMs).finally(() => { if (sweeping === run) sweeping = undefined; });
    sweeping = run;
    return run;
  };
  const loop: Loop = every(o.intervalMs, () => sweep(o.staleMs), (err) => d.log.warn({ err: err.message }, 'announce pass failed'));
  return {
    announce,
    sweep,
    async stop() {
      loop.stop();
      await Promise.allSettled([...inFlight, sweeping]);
    },
  };
}
