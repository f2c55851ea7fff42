// Traces across Kafka, as the OpenTelemetry messaging conventions have it (messaging.system
// "kafka"). A record is queued inside its request's trace: the publisher starts a PRODUCER span
// ("send <topic>") under the context active when the record is queued, not when its batch goes out,
// and writes that span's W3C traceparent (and tracestate, baggage) into the record's headers; the
// span ends when the broker acknowledged the record or the publish failed, so it shows the wait.
// A consumer handles a whole batch in one CONSUMER span ("process <topic>"), a new trace with a
// link to every record's context, so each request's trace reaches the batch that wrote it.
//
// With tracing off no propagator is registered: records go out with the headers they had.
import { context, propagation, ROOT_CONTEXT, SpanKind, trace, type Link, type TextMapGetter, type TextMapSetter } from '@opentelemetry/api';
import type { IHeaders, KafkaMessage, Message } from 'kafkajs';
import { endWith, failed, tracer, tracingRequested } from './tracing.ts';

const setter: TextMapSetter<IHeaders> = { set: (headers, key, value) => { headers[key] = value; } };
const getter: TextMapGetter<IHeaders | undefined> = {
  keys: (headers) => Object.keys(headers ?? {}),
  get: (headers, key) => {
    const value = headers?.[key];
    const first = Array.isArray(value) ? value[0] : value;
    return first === undefined ? undefined : first.toString();
  },
};

/**
 * Starts `message`'s PRODUCER span under the active context and returns the message with the
 * span's context in its headers; `settled` ends the span with the publish's outcome.
 */
export function tracePublish(topic: string, message: Message): { message: Message; settled(sent: Promise<void>): void } {
  // Without a trace exporter there is no span to record, and nothing to put in the record's headers.
  tracing ??= tracingRequested();
  if (!tracing) return untraced(message);
  const span = tracer().startSpan(`send ${topic}`, {
    kind: SpanKind.PRODUCER,
    attributes: {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'messaging.destination.name': topic,
      ...(typeof message.key === 'string' ? { 'messaging.kafka.message.key': message.key } : {}),
    },
  });
  const carrier: IHeaders = {};
  propagation.inject(trace.setSpan(context.active(), span), carrier, setter);
  return {
    message: Object.keys(carrier).length > 0 ? { ...message, headers: { ...message.headers, ...carrier } } : message,
    settled: (sent) => { sent.then(() => span.end(), (err: unknown) => { failed(span, err); span.end(); }); },
  };
}

let tracing: boolean | undefined;
const settledUntraced = () => undefined;
const untraced = (message: Message) => ({ message, settled: settledUntraced });

/** The span context a record's headers carry, if any. */
export function recordContext(message: Pick<KafkaMessage, 'headers'>) {
  return trace.getSpanContext(propagation.extract(ROOT_CONTEXT, message.headers, getter));
}

export interface BatchTarget { topic: string; groupId: string; partition: number; messages: Pick<KafkaMessage, 'headers' | 'offset'>[] }

/** Runs `work` (decode, handle, dead-letter, commit) as one batch's CONSUMER span, linked to its records. */
export function traceBatch<T>(b: BatchTarget, work: () => Promise<T>): Promise<T> {
  const links: Link[] = [];
  for (const m of b.messages) {
    const linked = recordContext(m);
    if (linked) links.push({ context: linked, attributes: { 'messaging.kafka.offset': Number(m.offset) } });
  }
  return tracer().startActiveSpan(`process ${b.topic}`, {
    kind: SpanKind.CONSUMER,
    links,
    attributes: {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': b.topic,
      'messaging.destination.partition.id': String(b.partition),
      'messaging.consumer.group.name': b.groupId,
      'messaging.batch.message_count': b.messages.length,
    },
  }, ROOT_CONTEXT, (span) => endWith(span, work));
}
