// What events/alert.ts raises, as Prometheus series: records dead-lettered and consumers retrying
// through an outage (their alert rules: ops/prometheus/alerts.yml).
import { counter, gauge } from './registry.ts';

export const deadLettered = counter({ name: 'coupon_dead_lettered_records_total', help: 'Records sent to a dead-letter topic', labelNames: ['topic', 'reason'] });
export const consumerOutage = gauge({ name: 'coupon_consumer_outage', help: '1 while a consumer is retrying through a dependency outage', labelNames: ['topic'] });
