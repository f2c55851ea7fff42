// grpc_server_started_total, grpc_server_handled_total and grpc_server_handling_seconds for every
// call, whatever the protocol (gRPC, gRPC-Web, Connect), with go-grpc-prometheus's labels and
// values: grpc_type unary | client_stream | server_stream | bidi_stream, grpc_service the full
// service name, grpc_method the method name, grpc_code the code's name as grpc-go spells it
// (OK, InvalidArgument, ResourceExhausted, Internal, …), so its dashboards and alerts apply.
// Installed as the outermost interceptor, so refusals by the interceptors inside it (auth) are
// counted too. A streamed response is handled when its stream ends.
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import type { DescMethod, DescService } from '@bufbuild/protobuf';
import { boundCounter } from '../metrics/bound.ts';
import { grpcHandled, grpcHandlingSeconds, grpcStarted } from '../metrics/grpc.ts';

const GRPC_TYPE: Record<DescMethod['methodKind'], string> = {
  unary: 'unary', server_streaming: 'server_stream', client_streaming: 'client_stream', bidi_streaming: 'bidi_stream',
};

// grpc-go's codes.Code.String(); connect-es's Code enum has the same names, OK aside.
const codeName = (code: Code | 'OK') => (code === 'OK' ? 'OK' : Code[code]);
const ALL_CODES: (Code | 'OK')[] = ['OK', ...Object.values(Code).filter((c): c is Code => typeof c === 'number')];

/** One method's labelled series, bound once (metrics/bound.ts): looking a series up by a labels object costs a hash per call. */
interface MethodSeries {
  started: { inc(): void };
  seconds: { startTimer(): () => void };
  handled: Map<Code | 'OK', { inc(): void }>;
}

function seriesOf(method: DescMethod): MethodSeries {
  const labels = { grpc_type: GRPC_TYPE[method.methodKind], grpc_service: method.parent.typeName, grpc_method: method.name };
  return {
    started: boundCounter(grpcStarted, labels),
    seconds: grpcHandlingSeconds.labels(labels),
    handled: new Map(ALL_CODES.map((code) => [code, boundCounter(grpcHandled, { ...labels, grpc_code: codeName(code) })])),
  };
}

/** `services`' methods start at zero for every code, as go-grpc-prometheus's Register does. */
export function grpcMetrics(services: DescService[] = []): Interceptor {
  const bound = new Map<DescMethod, MethodSeries>();
  for (const service of services) {
    for (const method of service.methods) {
      const labels = { grpc_type: GRPC_TYPE[method.methodKind], grpc_service: service.typeName, grpc_method: method.name };
      grpcStarted.inc(labels, 0);
      grpcHandlingSeconds.zero(labels);
      for (const code of ALL_CODES) grpcHandled.inc({ ...labels, grpc_code: codeName(code) }, 0);
    }
  }
  return (next) => async (req) => {
    let series = bound.get(req.method);
    if (!series) {
      series = seriesOf(req.method);
      bound.set(req.method, series);
    }
    series.started.inc();
    const stopTimer = series.seconds.startTimer();
    let done = false;
    const handled = (code: Code | 'OK') => {
      if (done) return;
      done = true;
      stopTimer();
      series.handled.get(code)?.inc();
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      handled(ConnectError.from(err).code);
      throw err;
    }
    if (!res.stream) {
      handled('OK');
      return res;
    }
    return { ...res, message: observed(res.message, handled) };
  };
}

async function* observed<T>(messages: AsyncIterable<T>, handled: (code: Code | 'OK') => void): AsyncIterable<T> {
  try {
    yield* messages;
    handled('OK');
  } catch (err) {
    handled(ConnectError.from(err).code);
    throw err;
  } finally {
    // The caller went away before the stream ended.
    handled(Code.Canceled);
  }
}
