// Alerts for a person to act on: an error log with a stable event name (`alert: true`), a
// Prometheus counter, and an optional webhook POST (ALERT_WEBHOOK_URL). A failing webhook is
// logged, never fatal. Events (docs/operations.md#alerts):
//   coupon.issue.dead_lettered, coupon.redemption.dead_lettered, coupon.payment_result.dead_lettered
//     records went to that consumer's dead-letter topic; `reason` says why: ATTEMPTS_EXHAUSTED (the
//     batch failed ISSUE_MAX_ATTEMPTS times on its own), a decode reason (BAD_MAGIC, …), or the
//     handler's rejection (UNKNOWN_COUPON_OR_SEQ, SEQ_TAKEN, INVALID_EVENT, NOT_IN_LEDGER, …)
//   coupon.dependency.outage    a consumer failed 5 times in a row on an outage, a producer could not
//                               register its schema, or the issued-coupon outbox pass could not
//                               publish (issuer/announce.ts); it keeps retrying
//   coupon.dependency.recovered the outage is over (a resolve notice, logged at info)
//   coupon.gate.rebuild_blocked a coupon's Redis state cannot be rebuilt while dead letters wait
//   coupon.redemption.load_blocked the same for a coupon's redemption state (store/loss-guard.ts)
import type { Logger } from '../log.ts';
import { consumerOutage as outage, deadLettered } from '../metrics/alerts.ts';

export interface Alert { event: string; topic: string; reason: string; records: number; error: string; attempts: number; [k: string]: unknown }

export class Alerter {
  private readonly log: Logger;
  private readonly webhookUrl: string | undefined;
  constructor(log: Logger, webhookUrl: string | undefined) {
    this.log = log;
    this.webhookUrl = webhookUrl;
  }

  /** Records went to a dead-letter topic. */
  async raise(alert: Alert): Promise<void> {
    deadLettered.inc({ topic: alert.topic, reason: alert.reason }, alert.records);
    this.log.error({ ...alert, alert: true }, alert.event);
    await this.post(alert);
  }

  /** A consumer is stuck on an outage (raised once per outage; nothing is dead-lettered for it). */
  async outage(alert: { topic: string; attempts: number; error: string; [k: string]: unknown }): Promise<void> {
    outage.set({ topic: alert.topic }, 1);
    const event = { event: 'coupon.dependency.outage', ...alert };
    this.log.error({ ...event, alert: true }, event.event);
    await this.post(event);
  }

  /** The outage is over. */
  async recovered(notice: { topic: string; attempts: number; outageMs: number }): Promise<void> {
    outage.set({ topic: notice.topic }, 0);
    const event = { event: 'coupon.dependency.recovered', ...notice };
    this.log.info(event, event.event);
    await this.post(event);
  }

  /** Any other condition a person must act on (no counter of its own). */
  async notify(alert: { event: string; [k: string]: unknown }): Promise<void> {
    this.log.error({ ...alert, alert: true }, alert.event);
    await this.post(alert);
  }

  private async post(body: Record<string, unknown>): Promise<void> {
    if (!this.webhookUrl) return;
    try {
      const res = await fetch(this.webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, at: new Date().toISOString() }),
        signal: AbortSignal.timeout(3_000),
      });
      if (!res.ok) this.log.warn({ status: res.status }, 'alert webhook answered an error');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'alert webhook unreachable');
    }
  }
}
