// One SERVER span per RPC, as the OpenTelemetry RPC conventions have it: named
// "<rpc.service>/<rpc.method>", with rpc.system "grpc" for gRPC and gRPC-Web calls (their status is
// rpc.grpc.status_code, 0 for OK) and "connect_rpc" for the Connect protocol (its error code, when
// there is one, is rpc.connect_rpc.error_code: "not_found", "unavailable", …). The span continues
// the caller's trace when the request carries a W3C traceparent, and is the active span while the
// handler runs, so what it publishes carries it on (telemetry/messaging.ts).
//
// Installed right inside the metrics interceptor and outside auth (server/app.ts): refusals are
// traced too. Status is ERROR only for the codes that mean the server failed (as for gRPC servers);
// a refusal such as NOT_FOUND or ALREADY_EXISTS is an answer, not a failure.
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { codeToString } from '@connectrpc/connect/protocol-connect';
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type TextMapGetter } from '@opentelemetry/api';
import { tracer } from './tracing.ts';

const SERVER_FAILURES = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

const headerGetter: TextMapGetter<Headers> = {
  keys: (h) => [...h.keys()],
  get: (h, key) => h.get(key) ?? undefined,
};

/** "grpc" for gRPC and gRPC-Web (application/grpc…), "connect_rpc" for Connect (anything else). */
const rpcSystem = (header: Headers) => (header.get('content-type')?.startsWith('application/grpc') ? 'grpc' : 'connect_rpc');

export function rpcTracing(): Interceptor {
  return (next) => async (req) => {
    const system = rpcSystem(req.header);
    const parent = propagation.extract(ROOT_CONTEXT, req.header, headerGetter);
    const span = tracer().startSpan(`${req.service.typeName}/${req.method.name}`, {
      kind: SpanKind.SERVER,
      attributes: { 'rpc.system': system, 'rpc.service': req.service.typeName, 'rpc.method': req.method.name },
    }, parent);
    let ended = false;
    const end = (code: Code | 'OK', err?: unknown) => {
      if (ended) return;
      ended = true;
      if (system === 'grpc') span.setAttribute('rpc.grpc.status_code', code === 'OK' ? 0 : code);
      else if (code !== 'OK') span.setAttribute('rpc.connect_rpc.error_code', codeToString(code));
      if (code !== 'OK' && SERVER_FAILURES.has(code)) span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : Code[code] });
      span.end();
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await context.with(trace.setSpan(parent, span), () => next(req));
    } catch (err) {
      end(ConnectError.from(err).code, err);
      throw err;
    }
    if (!res.stream) {
      end('OK');
      return res;
    }
    return { ...res, message: traced(res.message, end) };
  };
}

/** Ends the span when a streamed response ends, fails, or its caller goes away. */
async function* traced<T>(messages: AsyncIterable<T>, end: (code: Code | 'OK', err?: unknown) => void): AsyncIterable<T> {
  try {
    yield* messages;
    end('OK');
  } catch (err) {
    end(ConnectError.from(err).code, err);
    throw err;
  } finally {
    end(Code.Canceled);
  }
}
