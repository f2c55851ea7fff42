// coupon-issuer's periodic reconciliation (ops/reconcile-job.ts): coupons with each kind of drift at
// the last pass (alert rule: ops/prometheus/alerts.yml).
import { gauge } from './registry.ts';

export const reconcileDrift = gauge({ name: 'coupon_reconcile_drift', help: 'Coupons whose Redis, PostgreSQL and Kafka state disagree beyond records in flight, at the last reconcile pass', labelNames: ['kind'] });
