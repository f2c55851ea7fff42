// A producer's start against a registry that is down or slow (docs/design.md#outages-versus-poison):
// registering its schema is retried until the registry answers, with the consumers' capped backoff
// and their outage alert, instead of the process exiting and leaving a restart loop to an
// orchestrator. A refused schema (SchemaIncompatibleError) or any other failure still stops the
// start at once: waiting cannot fix it.
import type { DescMessage } from '@bufbuild/protobuf';
import type { Logger } from '../log.ts';
import type { Alerter } from './alert.ts';
import type { EventCodec, EventRegistry } from './registry.ts';
import { AttemptsExhausted, withRetries, type RetryPolicy } from './retry-policy.ts';

/** One try for a failure that is not an outage; outages wait 0.25 s, doubling up to 5 s. */
const START_POLICY: RetryPolicy = { maxAttempts: 1, backoffMs: 250, maxBackoffMs: 5_000 };

export async function codecWhenAvailable<Desc extends DescMessage>(
  registry: EventRegistry,
  topic: string,
  schema: Desc,
  o: { log: Logger; alerter: Alerter; policy?: RetryPolicy },
): Promise<EventCodec<Desc>> {
  try {
    return await withRetries(o.policy ?? START_POLICY, () => registry.forTopic(topic, schema), {
      onFailure: (err, attempt, delayMs, outage) => {
        if (outage) o.log.warn({ err, topic, attempt, retryInMs: delayMs }, 'the schema registry did not answer; registering again');
      },
      onOutage: (err, attempts) => o.alerter.outage({ topic, attempts, error: (err as Error)?.message ?? String(err), during: 'schema registration at start' }),
      onRecovered: (attempts, outageMs) => o.alerter.recovered({ topic, attempts, outageMs }),
      keepWaiting: () => true,
    });
  } catch (err) {
    throw err instanceof AttemptsExhausted ? err.cause : err;
  }
}
