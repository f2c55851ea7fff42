// A short way through for the hot path of a sale: a unary Connect call with a JSON body (what a
// storefront's HTTP client sends, and what `wrk` sends in `npm run bench`) to a method whose request
// is a few string fields, IssueCoupon. A CPU profile of a sale put about four fifths of coupon-api's
// time per call in connect-es's generic request and response handling (Headers objects, async
// iterables, reflection-based JSON, abort signals), far more than the call's own work once a
// sold-out coupon is answered in process (docs/performance.md).
//
// Only the transport is short-cut. The call runs through the same interceptors, in the same order,
// as connect-es runs them (metrics, auth, error mapping; server/app.ts), and the same service
// implementation; its answer, or its error, is written as connect-es writes it (codeToHttpStatus,
// errorToJsonBytes). Anything this does not handle exactly as connect-es would goes to connect-es
// instead, with the body already read: a content type other than application/json, a compressed
// body, a timeout header, a Connect protocol version other than 1, a body without a length or
// over the limit, and any body that is not a JSON object of the request's string fields (so every
// refusal of a malformed request is connect-es's own). test/server/fast-json.test.ts sends the same
// requests with and without this path and compares every answer.
import type http from 'node:http';
import type http2 from 'node:http2';
import { Code, ConnectError, createContextValues, type HandlerContext, type Interceptor, type UnaryRequest, type UnaryResponse } from '@connectrpc/connect';
import { codeToHttpStatus, errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import { create, ScalarType, toJsonString, type DescMessage, type DescMethodUnary, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import { counter } from '../metrics/registry.ts';

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

const fastAnswers = counter({
  name: 'coupon_rpc_fast_json_total',
  help: 'Unary Connect JSON calls answered by the short path (server/fast-json.ts) instead of connect-es, by method.',
  labelNames: ['grpc_method'],
});

/** A unary method whose request message has only string fields, and its implementation (fastJsonMethod). */
export interface FastJsonMethod {
  method: DescMethodUnary;
  impl: (request: unknown, context: HandlerContext) => unknown;
}

export function fastJsonMethod<I extends DescMessage, O extends DescMessage>(
  method: DescMethodUnary<I, O>,
  impl: (request: MessageShape<I>, context: HandlerContext) => Promise<MessageInitShape<O>> | MessageInitShape<O>,
): FastJsonMethod {
  return { method: method, impl: impl as FastJsonMethod['impl'] };
}

export interface FastJsonOptions {
  methods: FastJsonMethod[];
  /** The router's interceptors, outermost first (as connect-es applies them). */
  interceptors: Interceptor[];
  /** The router's readMaxBytes. */
  readMaxBytes: number;
  /** The router's jsonOptions (strictJson): its textDecoder reads the body, and errors are written with them. */
  jsonOptions: { textDecoder: { decode(input: Uint8Array): string } };
}

/** Handles the call (returns true) or leaves it untouched (false). `fallback` takes the body, read. */
export type FastJsonHandler = (req: NodeRequest, res: NodeResponse, fallback: (body: Uint8Array) => void) => boolean;

interface Route {
  method: DescMethodUnary;
  /** JSON name and proto name of each field, to the field's local name. */
  fields: Map<string, string>;
  call: (req: UnaryRequest) => Promise<UnaryResponse>;
  counted: { inc(): void };
}

const CONTENT_TYPE = /^application\/json(?:;\s*charset=utf-?8)?$/i;

function routeOf(m: FastJsonMethod, interceptors: Interceptor[]): Route {
  const { method } = m;
  const fields = new Map<string, string>();
  for (const f of method.input.fields) {
    if (f.fieldKind !== 'scalar' || f.scalar !== ScalarType.STRING || f.oneof) throw new Error(`${method.name}: the short JSON path takes string fields only`);
    fields.set(f.jsonName, f.localName);
    fields.set(f.name, f.localName);
  }
  const last = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const context = handlerContext(req);
    const output = await m.impl(req.message, context);
    return { stream: false, service: method.parent, method, header: context.responseHeader, trailer: context.responseTrailer, message: create(method.output, output as never) };
  };
  // connect-es: the first interceptor is the outermost.
  const call = interceptors.reduceRight<(req: UnaryRequest) => Promise<UnaryResponse>>((next, interceptor) => interceptor(next as never) as never, last);
  return { method, fields, call, counted: fastAnswers.labels({ grpc_method: method.name }) };
}

function handlerContext(req: UnaryRequest): HandlerContext {
  return {
    method: req.method, service: req.service, requestMethod: req.requestMethod, protocolName: 'connect', url: req.url,
    signal: req.signal, timeoutMs: () => undefined, requestHeader: req.header,
    responseHeader: new Headers(), responseTrailer: new Headers(), values: req.contextValues,
  };
}

export function fastJson(o: FastJsonOptions): FastJsonHandler {
  const routes = new Map(o.methods.map((m) => [`/${m.method.parent.typeName}/${m.method.name}`, routeOf(m, o.interceptors)]));
  return (req, res, fallback) => {
    const route = routes.get(req.url ?? '');
    if (!route || req.method !== 'POST') return false;
    const h = req.headers;
    const length = Number(h['content-length']);
    if (!CONTENT_TYPE.test(h['content-type'] ?? '') || h['content-encoding'] !== undefined || h['connect-timeout-ms'] !== undefined
      || (h['connect-protocol-version'] !== undefined && h['connect-protocol-version'] !== '1')
      || !(length > 0 && length <= o.readMaxBytes)) return false;
    const chunks: Buffer[] = [];
    // A client that goes away mid-body is an 'error' on the request; nothing is answered then.
    req.once('error', () => undefined);
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => {
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const message = decode(route, body, o.jsonOptions.textDecoder);
      if (!message) { fallback(body); return; }
      route.counted.inc();
      answer(route, req, res, message, o.jsonOptions);
    });
    return true;
  };
}

/** The request message, or undefined for anything but a JSON object of the request's string fields. */
function decode(route: Route, body: Buffer, textDecoder: { decode(input: Uint8Array): string }): Record<string, string> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(textDecoder.decode(body));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const init: Record<string, string> = {};
  for (const key in value) {
    const local = route.fields.get(key);
    const v = (value as Record<string, unknown>)[key];
    // Unknown keys, non-strings (null included), and a field given under both its names are
    // connect-es's to judge.
    if (local === undefined || typeof v !== 'string' || local in init) return undefined;
    init[local] = v;
  }
  return init;
}

function answer(route: Route, req: NodeRequest, res: NodeResponse, init: Record<string, string>, jsonOptions: object): void {
  const abort = new AbortController();
  res.once('close', () => { if (!res.writableFinished) abort.abort(new ConnectError('the client went away', Code.Canceled)); });
  const request: UnaryRequest = {
    stream: false, service: route.method.parent, method: route.method, requestMethod: 'POST',
    url: `http://${req.headers.host ?? 'localhost'}${req.url ?? ''}`,
    signal: abort.signal, header: requestHeaders(req), contextValues: createContextValues(),
    message: create(route.method.input, init as never),
  };
  route.call(request).then((response) => {
    write(res, 200, toJsonString(route.method.output, response.message), response.header);
  }, (err: unknown) => {
    const error = err instanceof ConnectError ? err : new ConnectError('internal error', Code.Internal, undefined, undefined, err);
    write(res, codeToHttpStatus(error.code), errorToJsonBytes(error, jsonOptions), error.metadata);
  }).catch(() => undefined);
}

function write(res: NodeResponse, status: number, body: string | Uint8Array, extra: Headers): void {
  if (res.writableEnded || res.destroyed) return;
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  for (const [k, v] of extra) if (k !== 'content-type' && k !== 'content-length') headers[k] = v;
  headers['content-length'] = String(bytes.byteLength);
  (res as http.ServerResponse).writeHead(status, headers);
  res.end(bytes);
}

/**
 * The request's headers as connect-es hands them to interceptors (a WHATWG Headers made from Node's
 * header object), but made only if something other than get() and has() is asked for: the
 * interceptors on this path read one header, and building a Headers object was a visible share of
 * a call's CPU.
 */
class RequestHeaders {
  readonly #node: http.IncomingHttpHeaders;
  #full: Headers | undefined;

  constructor(node: http.IncomingHttpHeaders) {
    this.#node = node;
  }

  get(name: string): string | null {
    if (this.#full) return this.#full.get(name);
    const v = this.#node[name.toLowerCase()];
    return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
  }

  has(name: string): boolean {
    return this.#full ? this.#full.has(name) : this.#node[name.toLowerCase()] !== undefined;
  }

  /** Every other Headers method, on a Headers made once. */
  full(): Headers {
    if (!this.#full) {
      const headers = new Headers();
      for (const [k, v] of Object.entries(this.#node)) {
        if (k.startsWith(':') || v === undefined) continue;
        if (Array.isArray(v)) for (const one of v) headers.append(k, one);
        else headers.set(k, v);
      }
      this.#full = headers;
    }
    return this.#full;
  }
}

for (const key of ['set', 'append', 'delete', 'forEach', 'entries', 'keys', 'values', 'getSetCookie', Symbol.iterator] as const) {
  Object.defineProperty(RequestHeaders.prototype, key, {
    value(this: RequestHeaders, ...args: unknown[]) {
      const full = this.full() as unknown as Record<PropertyKey, (...a: unknown[]) => unknown>;
      return full[key]!.apply(full, args);
    },
  });
}

const requestHeaders = (req: NodeRequest): Headers => new RequestHeaders(req.headers) as unknown as Headers;
