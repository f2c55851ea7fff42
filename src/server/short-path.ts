// A short way through for the hot path of a sale: IssueCoupon, a unary method whose request is a
// few string fields, called over Connect with a JSON body (what a storefront's HTTP client sends,
// and `wrk` in `npm run bench`) or over gRPC with a protobuf body (internal services, grpcurl). A
// CPU profile of a sale put most of coupon-api's time per call in connect-es's generic request and
// response handling (Headers objects, async iterables, reflection-based JSON, abort signals), far
// more than the call's own work once a sold-out coupon is answered in process
// (docs/decisions/0017-short-path-for-issuecoupon.md).
//
// Only the transport is short-cut. The call runs through the same interceptors, in the same order,
// as connect-es runs them (metrics, auth, error mapping; server/app.ts), and the same service
// implementation; its answer, or its error, is written as connect-es writes it (codeToHttpStatus
// and errorToJsonBytes for Connect; setTrailerStatus for gRPC; connect-es's compression choice).
// Anything this does not handle exactly as connect-es would goes to connect-es instead, with the
// body already read: another content type, a compressed request, a Connect timeout header, a
// Connect protocol version other than 1, an invalid grpc-timeout, a body without a length or over
// the limit (Connect), more or less than one uncompressed message (gRPC), and any body that does
// not decode as the request (so every refusal of a malformed request is connect-es's own).
// test/server/short-path.test.ts sends the same requests with and without this path and compares
// every answer.
import type http from 'node:http';
import type http2 from 'node:http2';
import { Code, ConnectError, createContextValues, type HandlerContext, type Interceptor, type UnaryRequest, type UnaryResponse } from '@connectrpc/connect';
import { compressionNegotiate, type Compression } from '@connectrpc/connect/protocol';
import { codeToHttpStatus, errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import { parseTimeout, setTrailerStatus } from '@connectrpc/connect/protocol-grpc';
import { create, fromBinary, ScalarType, toBinary, toJsonString, type DescMessage, type DescMethodUnary, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import { boundCounter } from '../metrics/bound.ts';
import { readFlatJson } from './flat-json.ts';
import { counter } from '../metrics/registry.ts';

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

const shortAnswers = counter({
  name: 'coupon_rpc_short_path_total',
  help: 'Calls answered by the short path (server/short-path.ts) instead of connect-es, by method and protocol (connect: unary Connect JSON; grpc: gRPC with a protobuf body).',
  labelNames: ['grpc_method', 'protocol'],
});

/** A unary method whose request message has only string fields, and its implementation (shortPathMethod). */
export interface ShortPathMethod {
  method: DescMethodUnary;
  impl: (request: unknown, context: HandlerContext) => unknown;
}

export function shortPathMethod<I extends DescMessage, O extends DescMessage>(
  method: DescMethodUnary<I, O>,
  impl: (request: MessageShape<I>, context: HandlerContext) => Promise<MessageInitShape<O>> | MessageInitShape<O>,
): ShortPathMethod {
  return { method: method, impl: impl as ShortPathMethod['impl'] };
}

export interface ShortPathOptions {
  methods: ShortPathMethod[];
  /** The router's interceptors, outermost first (as connect-es applies them). */
  interceptors: Interceptor[];
  /** The router's readMaxBytes. */
  readMaxBytes: number;
  /** The router's acceptCompression: the response compression is chosen among them, as connect-es does. */
  acceptCompression: Compression[];
  /** The router's jsonOptions (strictJson): its textDecoder reads JSON bodies, and errors are written with them. */
  jsonOptions: { textDecoder: { decode(input: Uint8Array): string } };
}

/** The body a fallback hands to connect-es: read whole, or read in part with the rest still to come. */
export type ReadBody = Uint8Array | AsyncIterable<Uint8Array>;

/** Handles the call (returns true) or leaves it untouched (false). `fallback` takes the body, read. */
export type ShortPathHandler = (req: NodeRequest, res: NodeResponse, fallback: (body: ReadBody) => void) => boolean;

interface Route {
  method: DescMethodUnary;
  /** JSON name and proto name of each field, to the field's local name. */
  fields: Map<string, string>;
  call: (req: UnaryRequest) => Promise<UnaryResponse>;
  counted: { connect: { inc(): void }; grpc: { inc(): void } };
}

// connect-es's contentTypeUnaryRegExp, JSON only; gRPC's contentTypeRegExp, protobuf only.
const CONNECT_JSON = /^application\/json(?:; ?charset=utf-?8)?$/i;
const GRPC_PROTO = /^application\/grpc(?:\+proto)?$/i;
/** connect-es's default: answers shorter than this are never compressed. */
const COMPRESS_MIN_BYTES = 1024;

function routeOf(m: ShortPathMethod, interceptors: Interceptor[]): Route {
  const { method } = m;
  const fields = new Map<string, string>();
  for (const f of method.input.fields) {
    if (f.fieldKind !== 'scalar' || f.scalar !== ScalarType.STRING || f.oneof) throw new Error(`${method.name}: the short path takes string fields only`);
    fields.set(f.jsonName, f.localName);
    fields.set(f.name, f.localName);
  }
  const last = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const context = new ShortContext(req as ShortRequest);
    const output = await m.impl(req.message, context);
    return { stream: false, service: method.parent, method, header: context.madeHeader ?? NO_HEADERS, trailer: context.madeTrailer ?? NO_HEADERS, message: create(method.output, output as never) };
  };
  // connect-es: the first interceptor is the outermost.
  const call = interceptors.reduceRight<(req: UnaryRequest) => Promise<UnaryResponse>>((next, interceptor) => interceptor(next as never) as never, last);
  return {
    method, fields, call,
    counted: { connect: boundCounter(shortAnswers, { grpc_method: method.name, protocol: 'connect' }), grpc: boundCounter(shortAnswers, { grpc_method: method.name, protocol: 'grpc' }) },
  };
}

/**
 * An answer's headers or trailers when the handler set none: shared by every such answer, so it
 * refuses to be changed (an interceptor that wants to add one finds out at once).
 */
const NO_HEADERS = new Headers();
for (const change of ['set', 'append', 'delete']) {
  Object.defineProperty(NO_HEADERS, change, { value: () => { throw new Error('the short path\'s empty response headers cannot be changed'); } });
}
const hasEntries = (h: Headers) => h !== NO_HEADERS && !h.keys().next().done;

const noTimeout = () => undefined;

/**
 * The handler's context, as connect-es makes it for a unary call without a timeout. Its response
 * headers and trailers are made only if the handler asks for them (the gate never does).
 */
class ShortContext implements HandlerContext {
  readonly #req: ShortRequest;
  madeHeader: Headers | undefined;
  madeTrailer: Headers | undefined;
  readonly timeoutMs = noTimeout;

  constructor(req: ShortRequest) {
    this.#req = req;
  }

  get method() { return this.#req.method; }
  get service() { return this.#req.service; }
  get requestMethod() { return this.#req.requestMethod; }
  get protocolName() { return this.#req.protocolName; }
  get url() { return this.#req.url; }
  get signal() { return this.#req.signal; }
  get requestHeader() { return this.#req.header; }
  get values() { return this.#req.contextValues; }
  get responseHeader(): Headers { return (this.madeHeader ??= new Headers()); }
  get responseTrailer(): Headers { return (this.madeTrailer ??= new Headers()); }
}

export function shortPath(o: ShortPathOptions): ShortPathHandler {
  const routes = new Map(o.methods.map((m) => [`/${m.method.parent.typeName}/${m.method.name}`, routeOf(m, o.interceptors)]));
  return (req, res, fallback) => {
    const route = routes.get(req.url ?? '');
    if (!route || req.method !== 'POST') return false;
    const h = req.headers;
    const type = h['content-type'] ?? '';
    if (CONNECT_JSON.test(type)) return connectJson(o, route, req, res, fallback);
    if (GRPC_PROTO.test(type) && req.httpVersionMajor === 2) return grpcProto(o, route, req, res, fallback);
    return false;
  };
}

/**
 * Reads the body, up to `limit` bytes; past that, hands the body read so far and the rest of the
 * stream to connect-es (which refuses it with its own error).
 */
function readBody(req: NodeRequest, limit: number, done: (body: Buffer) => void, fallback: (body: ReadBody) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  // A client that goes away mid-body is an 'error' on the request; nothing is answered then.
  req.once('error', () => undefined);
  const onData = (chunk: Buffer) => {
    chunks.push(chunk);
    size += chunk.length;
    if (size <= limit) return;
    req.off('data', onData);
    req.off('end', onEnd);
    req.pause();
    fallback((async function* () {
      try {
        yield* chunks;
        for await (const chunk of req as AsyncIterable<Buffer>) yield chunk;
      } finally {
        // connect-es refuses an over-limit message from its first bytes and reads no further: the
        // rest of the request is drained, or the paused stream (and its connection) would never end.
        if (!req.readableEnded && !req.destroyed) req.resume();
      }
    })());
  };
  const onEnd = () => done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
  req.on('data', onData);
  req.once('end', onEnd);
}

function connectJson(o: ShortPathOptions, route: Route, req: NodeRequest, res: NodeResponse, fallback: (body: ReadBody) => void): boolean {
  const h = req.headers;
  const length = Number(h['content-length']);
  if (h['content-encoding'] !== undefined || h['connect-timeout-ms'] !== undefined
    || (h['connect-protocol-version'] !== undefined && h['connect-protocol-version'] !== '1')
    || !(length > 0 && length <= o.readMaxBytes)) return false;
  const compression = compressionNegotiate(o.acceptCompression, null, header(h['accept-encoding']), 'accept-encoding').response;
  readBody(req, o.readMaxBytes, (body) => {
    const message = decodeJson(route, body, o.jsonOptions.textDecoder);
    if (!message) { fallback(body); return; }
    route.counted.connect.inc();
    route.call(unaryRequest(route, req, res, message, 'connect')).then(
      (response) => writeConnect(res, 200, Buffer.from(toJsonString(route.method.output, response.message)), response.header, compression),
      (err: unknown) => {
        const error = asConnectError(err);
        let bytes = errorBytes.get(error);
        if (!bytes) {
          bytes = errorToJsonBytes(error, o.jsonOptions as Parameters<typeof errorToJsonBytes>[1]);
          errorBytes.set(error, bytes);
        }
        return writeConnect(res, codeToHttpStatus(error.code), bytes, error.metadata, compression);
      },
    ).catch(() => undefined);
  }, fallback);
  return true;
}

function grpcProto(o: ShortPathOptions, route: Route, req: NodeRequest, res: NodeResponse, fallback: (body: ReadBody) => void): boolean {
  const h = req.headers;
  const encoding = header(h['grpc-encoding']);
  if ((encoding !== null && encoding !== 'identity') || parseTimeout(header(h['grpc-timeout']), Number.MAX_SAFE_INTEGER).error) return false;
  const compression = compressionNegotiate(o.acceptCompression, encoding, header(h['grpc-accept-encoding']), 'grpc-accept-encoding').response;
  readBody(req, o.readMaxBytes + 5, (body) => {
    const message = decodeEnvelope(route, body);
    if (!message) { fallback(body); return; }
    route.counted.grpc.inc();
    route.call(unaryRequest(route, req, res, message, 'grpc')).then(
      (response) => writeGrpc(res, toBinary(route.method.output, response.message), response.header,
        hasEntries(response.trailer) ? Object.fromEntries(setTrailerStatus(new Headers(response.trailer), undefined)) : GRPC_OK, compression),
      (err: unknown) => {
        const error = asConnectError(err);
        let trailer = errorTrailers.get(error);
        if (!trailer) {
          trailer = Object.fromEntries(setTrailerStatus(new Headers(), error));
          errorTrailers.set(error, trailer);
        }
        return writeGrpc(res, undefined, undefined, trailer, compression);
      },
    ).catch(() => undefined);
  }, fallback);
  return true;
}

const header = (v: string | string[] | undefined): string | null => (v === undefined ? null : Array.isArray(v) ? v.join(', ') : v);

// An error thrown to many callers (the gate's refusals of a sold-out coupon are one object per
// coupon, and so is what errorMapping makes of them) is written out once: its answer's bytes, or
// its gRPC trailers, are kept with it.
const errorBytes = new WeakMap<ConnectError, Uint8Array>();
const errorTrailers = new WeakMap<ConnectError, Record<string, string>>();

const asConnectError = (err: unknown): ConnectError => (err instanceof ConnectError ? err : new ConnectError('internal error', Code.Internal, undefined, undefined, err));

/** The request message, or undefined for anything but a JSON object of the request's string fields. */
function decodeJson(route: Route, body: Buffer, textDecoder: { decode(input: Uint8Array): string }): MessageShape<DescMessage> | undefined {
  // What storefronts send, read without JSON.parse (server/flat-json.ts); anything else below.
  const flat = readFlatJson(body, route.fields);
  if (flat) return create(route.method.input, flat as never);
  let value: unknown;
  try {
    value = JSON.parse(textDecoder.decode(body));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const init: Record<string, string> = {};
  let members = 0;
  for (const key in value) {
    const local = route.fields.get(key);
    const v = (value as Record<string, unknown>)[key];
    // Unknown keys, non-strings (null included), strings that are not well-formed Unicode (a lone
    // surrogate escaped in JSON), and a field given under both its names are connect-es's to judge.
    if (local === undefined || typeof v !== 'string' || !v.isWellFormed() || Object.hasOwn(init, local)) return undefined;
    init[local] = v;
    members++;
  }
  // JSON.parse keeps the last of repeated keys, which connect-es refuses: every member of the
  // object must have come through.
  if (membersIn(body) !== members) return undefined;
  return create(route.method.input, init as never);
}

/**
 * The number of members of a flat JSON object of strings: the colons outside strings. Only called
 * once JSON.parse read the body as such an object, so the body is valid JSON.
 */
function membersIn(body: Buffer): number {
  let colons = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (inString) {
      if (c === 0x5c) i++; // a backslash: the next byte is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x3a) {
      colons++;
    }
  }
  return colons;
}

/** The message of a body that is exactly one uncompressed gRPC envelope, or undefined. */
function decodeEnvelope(route: Route, body: Buffer): MessageShape<DescMessage> | undefined {
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return undefined;
  try {
    return fromBinary(route.method.input, body.subarray(5));
  } catch {
    return undefined;
  }
}

/**
 * The request the interceptors see, as connect-es makes it for a unary call. Its URL and abort
 * signal are made only if something asks for them: the gate never does, and an AbortController with
 * its 'close' listener per call showed in a CPU profile of a sale.
 */
class ShortRequest {
  readonly stream = false;
  readonly requestMethod = 'POST';
  readonly service: UnaryRequest['service'];
  readonly method: UnaryRequest['method'];
  readonly header: Headers;
  readonly contextValues = createContextValues();
  readonly message: MessageShape<DescMessage>;
  readonly protocolName: string;
  readonly #req: NodeRequest;
  readonly #res: NodeResponse;
  #signal: AbortSignal | undefined;

  constructor(route: Route, req: NodeRequest, res: NodeResponse, message: MessageShape<DescMessage>, protocolName: string) {
    this.service = route.method.parent;
    this.method = route.method;
    this.header = requestHeaders(req);
    this.message = message;
    this.protocolName = protocolName;
    this.#req = req;
    this.#res = res;
  }

  get url(): string {
    const h = this.#req.headers;
    return `http://${header(h.host) ?? header(h[':authority']) ?? 'localhost'}${this.#req.url ?? ''}`;
  }

  /** Aborted when the client goes away before the answer is written. */
  get signal(): AbortSignal {
    if (!this.#signal) {
      const res = this.#res;
      const abort = new AbortController();
      const gone = () => { if (!res.writableFinished) abort.abort(new ConnectError('the client went away', Code.Canceled)); };
      if (res.closed || res.destroyed) gone(); else res.once('close', gone);
      this.#signal = abort.signal;
    }
    return this.#signal;
  }
}

const unaryRequest = (route: Route, req: NodeRequest, res: NodeResponse, message: MessageShape<DescMessage>, protocolName: string): UnaryRequest =>
  new ShortRequest(route, req, res, message, protocolName);

async function writeConnect(res: NodeResponse, status: number, body: Uint8Array, extra: Headers, compression: Compression | null): Promise<void> {
  if (res.writableEnded || res.destroyed) return;
  if (!hasEntries(extra) && !(compression && body.byteLength >= COMPRESS_MIN_BYTES)) {
    // Nothing but the two headers every answer has: written as a Headers object would order them,
    // without making one (WHATWG Headers were a visible share of a refusal's CPU).
    (res as http.ServerResponse).writeHead(status, { 'content-length': String(body.byteLength), 'content-type': 'application/json' });
    res.end(body);
    return;
  }
  const headers = new Headers(extra);
  headers.set('content-type', 'application/json');
  let bytes = body;
  if (compression && bytes.byteLength >= COMPRESS_MIN_BYTES) {
    bytes = await compression.compress(bytes);
    headers.set('content-encoding', compression.name);
  }
  headers.set('content-length', String(bytes.byteLength));
  // In the order connect-es writes them (a Headers object's: sorted by name).
  (res as http.ServerResponse).writeHead(status, Object.fromEntries(headers));
  res.end(bytes);
}

/** The trailers of an OK answer whose handler set none (Node copies them, never keeps the object). */
const GRPC_OK: Record<string, string> = Object.fromEntries(setTrailerStatus(new Headers(), undefined));

async function writeGrpc(res: NodeResponse, message: Uint8Array | undefined, extra: Headers | undefined, trailer: Record<string, string>, compression: Compression | null): Promise<void> {
  if (res.writableEnded || res.destroyed) return;
  let headers: Record<string, string>;
  if (extra === undefined || !hasEntries(extra)) {
    // In the order a Headers object would give them (sorted by name).
    headers = compression ? { 'content-type': 'application/grpc+proto', 'grpc-encoding': compression.name } : { 'content-type': 'application/grpc+proto' };
  } else {
    const all = new Headers(extra);
    all.set('content-type', 'application/grpc+proto');
    if (compression) all.set('grpc-encoding', compression.name);
    headers = Object.fromEntries(all);
  }
  let envelope: Buffer | undefined;
  if (message) {
    const compress = compression !== null && message.byteLength >= COMPRESS_MIN_BYTES;
    const payload = compress ? await compression.compress(message) : message;
    envelope = Buffer.allocUnsafe(5 + payload.byteLength);
    envelope[0] = compress ? 1 : 0;
    envelope.writeUInt32BE(payload.byteLength, 1);
    envelope.set(payload, 5);
  }
  const answer = res as http2.Http2ServerResponse;
  answer.writeHead(200, headers);
  if (envelope) answer.write(envelope);
  answer.addTrailers(trailer);
  answer.end();
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
    const lower = name.toLowerCase();
    return lower.startsWith(':') ? null : header(this.#node[lower]);
  }

  has(name: string): boolean {
    return this.get(name) !== null;
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
