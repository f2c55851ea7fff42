// OpenTelemetry tracing for coupon-api and coupon-issuer: the official Node SDK, exporting over
// OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and nothing
// otherwise. Off, no SDK starts: every span below is the API's no-op span and no propagator is
// registered, so records carry no traceparent and a call costs a few object allocations.
//
// On, the SDK reads the standard variables itself: OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf by
// default, http/json, grpc), OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
// OTEL_PROPAGATORS (tracecontext,baggage), OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME (default:
// the process's name), OTEL_SDK_DISABLED. Only traces: metrics stay on Prometheus (metrics/) and
// logs on stdout (log.ts).
//
// The spans themselves: one SERVER span per RPC (telemetry/rpc.ts), a PRODUCER span per record and
// a CONSUMER span per batch linked to its records (telemetry/messaging.ts), and the issuer's INSERT
// (dbSpan below).
import { SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';

/** The tracer every project span comes from (a no-op one until the SDK starts). */
export const tracer = (): Tracer => trace.getTracer('coupon-gate');

export interface Tracing {
  /** True when spans are recorded and exported. */
  readonly enabled: boolean;
  /** Exports the spans still buffered and stops the SDK; call last on shutdown. */
  shutdown(): Promise<void>;
}

/** Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not disabled. */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  return Boolean(endpoint) && env.OTEL_SDK_DISABLED?.trim().toLowerCase() !== 'true';
}

/**
 * Starts the SDK for `serviceName` (coupon-api, coupon-issuer) when the environment asks for it;
 * await it before anything else. OTEL_SERVICE_NAME or a service.name in OTEL_RESOURCE_ATTRIBUTES wins.
 */
export async function startTracing(serviceName: string, env: NodeJS.ProcessEnv = process.env): Promise<Tracing> {
  if (!tracingRequested(env)) return { enabled: false, shutdown: () => Promise.resolve() };
  // Loaded only when asked for: the SDK and its exporters take a second to load.
  const { NodeSDK } = await import('@opentelemetry/sdk-node');
  const named = Boolean(env.OTEL_SERVICE_NAME?.trim()) || /(^|,)\s*service\.name\s*=/.test(env.OTEL_RESOURCE_ATTRIBUTES ?? '');
  const sdk = new NodeSDK({
    ...(named ? {} : { serviceName }),
    // Traces only (see the top of this file).
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  let stopped: Promise<void> | undefined;
  return {
    enabled: true,
    shutdown: () => (stopped ??= sdk.shutdown().catch((err: unknown) => {
      console.error(`${serviceName}: could not flush traces: ${(err as Error).message}`);
    })),
  };
}

/** Ends `span` with the outcome of `work`: an exception recorded and status ERROR when it threw. */
export async function endWith<T>(span: Span, work: () => PromiseLike<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    failed(span, err);
    throw err;
  } finally {
    span.end();
  }
}

export function failed(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
}

/**
 * A CLIENT span around one PostgreSQL statement, named as the database conventions say
 * ("INSERT user_coupons"), for the statements worth seeing in a trace. (A contrib pg
 * instrumentation would trace every query; the project does without one.)
 */
export function dbSpan<T>(operation: string, collection: string, work: () => PromiseLike<T>, attributes: Attributes = {}): Promise<T> {
  return tracer().startActiveSpan(`${operation} ${collection}`, {
    kind: SpanKind.CLIENT,
    attributes: {
      'db.system.name': 'postgresql',
      // The name before semantic conventions 1.26, which most backends still key on.
      'db.system': 'postgresql',
      'db.operation.name': operation,
      'db.collection.name': collection,
      ...attributes,
    },
  }, (span) => endWith(span, work));
}
