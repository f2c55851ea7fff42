// Alerts for a person to act on: an error log with a stable event name, a Prometheus counter, and
// an optional webhook POST (ALERT_WEBHOOK_URL). A failing webhook is logged, never fatal.
import { Counter, register } from 'prom-client';
import type { Logger } from '../log.ts';

const deadLettered = (register.getSingleMetric('coupon_dead_lettered_records_total') as Counter<'topic' | 'reason'> | undefined)
  ?? new Counter({ name: 'coupon_dead_lettered_records_total', help: 'Records sent to a dead-letter topic', labelNames: ['topic', 'reason'] });

export interface Alert { event: string; topic: string; reason: string; records: number; error: string; attempts: number; [k: string]: unknown }

export class Alerter {
  private readonly log: Logger;
  private readonly webhookUrl: string | undefined;
  constructor(log: Logger, webhookUrl: string | undefined) {
    this.log = log;
    this.webhookUrl = webhookUrl;
  }

  async raise(alert: Alert): Promise<void> {
    deadLettered.inc({ topic: alert.topic, reason: alert.reason }, alert.records);
    this.log.error({ ...alert, alert: true }, alert.event);
    if (!this.webhookUrl) return;
    try {
      const res = await fetch(this.webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...alert, at: new Date().toISOString() }),
        signal: AbortSignal.timeout(3_000),
      });
      if (!res.ok) this.log.warn({ status: res.status }, 'alert webhook answered an error');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'alert webhook unreachable');
    }
  }
}
