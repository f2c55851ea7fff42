// Calls coupon-api the way the bytes travel, without an RPC library on the sending side: gRPC over
// HTTP/2 (5-byte length prefix per message, status in trailers), gRPC-Web (the same frames, trailers
// in a final frame flagged 0x80) and Connect unary (the bare message; an error is a JSON body), each
// with protobuf or JSON messages. Tests and the fuzzer hand it any bytes, valid or not.
//
// Every request leaves through send(), and its headers are made in requestHeaders() only: that is
// where a bearer token goes once calls must be authenticated.
import http from 'node:http';
import http2 from 'node:http2';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { fromBinary, fromJsonString, toBinary, toJsonString, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { codeToString, errorFromJsonBytes } from '@connectrpc/connect/protocol-connect';
import { findTrailerError } from '@connectrpc/connect/protocol-grpc';
import { trailerParse } from '@connectrpc/connect/protocol-grpc-web';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { ErrorDetailSchema, type ErrorDetail } from '../../gen/coupon/v1/error_pb.js';
import { tokenFor } from './auth.ts';

export type Protocol = 'grpc' | 'grpc-web' | 'connect';
export type Encoding = 'proto' | 'json';
export interface Wire { protocol: Protocol; encoding: Encoding; http: '1.1' | '2' }

export const wireName = (w: Wire) => `${w.protocol}+${w.encoding}/h${w.http === '2' ? '2' : '1'}`;

/** gRPC needs HTTP/2; gRPC-Web and Connect are called over HTTP/1.1 as browsers and curl do, and over HTTP/2. */
export const WIRES: readonly Wire[] = [
  { protocol: 'grpc', encoding: 'proto', http: '2' },
  { protocol: 'grpc', encoding: 'json', http: '2' },
  { protocol: 'grpc-web', encoding: 'proto', http: '1.1' },
  { protocol: 'grpc-web', encoding: 'json', http: '2' },
  { protocol: 'connect', encoding: 'proto', http: '1.1' },
  { protocol: 'connect', encoding: 'json', http: '1.1' },
  { protocol: 'connect', encoding: 'proto', http: '2' },
];

export const METHOD_NAMES: readonly string[] = CouponService.methods.map((m) => m.name);
export const methodDesc = (name: string) => {
  const m = CouponService.methods.find((x) => x.name === name);
  if (!m) throw new Error(`no method ${name}`);
  return m;
};

export interface Outcome {
  /** HTTP status of the response. */
  http: number;
  /** Whether the call succeeded. */
  ok: boolean;
  /** For an error, the RPC status as a client concludes it: grpc-status, the Connect error code, or (for a bare HTTP refusal) the code clients derive from the HTTP status. */
  code: Code | undefined;
  /** "ok", or the code's name in the Connect spelling ("invalid_argument"). */
  codeName: string;
  message: string;
  /** The coupon.v1.ErrorDetail of an error, if it carries one. */
  detail: ErrorDetail | undefined;
  /** Whether the answer is a bare HTTP refusal with no RPC status at all (no grpc-status, no Connect error body). */
  bareHttp: boolean;
  /** The response message bytes (protobuf or JSON) of a successful call. */
  body: Uint8Array | undefined;
}

/** A length-prefixed message: flags byte, 4-byte big-endian length, payload. */
export function envelope(payload: Uint8Array, flags = 0, declaredLength = payload.byteLength): Uint8Array {
  const out = new Uint8Array(5 + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, flags);
  view.setUint32(1, declaredLength >>> 0);
  out.set(payload, 5);
  return out;
}

/** A request message in the wire's encoding. */
export function encodeMessage<D extends DescMessage>(wire: Wire, schema: D, init: MessageInitShape<D>): Uint8Array {
  const msg = create(schema, init);
  return wire.encoding === 'json' ? new TextEncoder().encode(toJsonString(schema, msg)) : toBinary(schema, msg);
}

export const contentType = (w: Wire) => {
  if (w.protocol === 'connect') return `application/${w.encoding}`;
  return `application/${w.protocol}+${w.encoding}`;
};

/** The one place request headers are made. */
// Every CouponService call carries a bearer token; an operator may call every RPC.
const OPERATOR_AUTHORIZATION = `Bearer ${await tokenFor('operator')}`;

export function requestHeaders(wire: Wire, extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { 'content-type': contentType(wire), authorization: OPERATOR_AUTHORIZATION };
  if (wire.protocol === 'grpc') h.te = 'trailers';
  if (wire.protocol === 'grpc-web') h['x-grpc-web'] = '1';
  if (wire.protocol === 'connect') h['connect-protocol-version'] = '1';
  return { ...h, ...extra };
}

export interface SendOptions {
  /** The payload is the whole request body as given (no length prefix is added for gRPC and gRPC-Web). */
  raw?: boolean;
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** Request path instead of /coupon.v1.CouponService/<method>. */
  path?: string;
  /** HTTP method instead of POST. */
  httpMethod?: string;
}

interface RawResponse { status: number; headers: Headers; body: Uint8Array; trailers: Headers }

const toHeaders = (h: http.IncomingHttpHeaders | http2.IncomingHttpHeaders) => {
  const out = new Headers();
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(':') || v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [String(v)]) out.append(k, one);
  }
  return out;
};

export class WireClient {
  private session: http2.ClientHttp2Session | undefined;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  readonly baseUrl: string;
  constructor(baseUrl: string) { this.baseUrl = baseUrl; }

  /** Sends `payload` as one call of `method` and reads the answer. Never throws for an RPC error. */
  async send(wire: Wire, method: string, payload: Uint8Array, opts: SendOptions = {}): Promise<Outcome> {
    const body = opts.raw || wire.protocol === 'connect' ? payload : envelope(payload);
    const path = opts.path ?? `/${CouponService.typeName}/${method}`;
    const headers = requestHeaders(wire, opts.headers);
    const verb = opts.httpMethod ?? 'POST';
    const res = wire.http === '2'
      ? await this.h2(verb, path, headers, body, opts.timeoutMs ?? 10_000)
      : await this.h1(verb, path, headers, body, opts.timeoutMs ?? 10_000);
    return readOutcome(wire, res);
  }

  close() {
    this.session?.close();
    this.agent.destroy();
  }

  private h2Session(): http2.ClientHttp2Session {
    if (!this.session || this.session.closed || this.session.destroyed) {
      const s = http2.connect(this.baseUrl);
      s.on('error', () => undefined);
      s.unref();
      this.session = s;
    }
    return this.session;
  }

  private h2(verb: string, path: string, headers: Record<string, string>, body: Uint8Array, timeoutMs: number): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const req = this.h2Session().request({ ':method': verb, ':path': path, ...headers });
      const timer = setTimeout(() => { req.close(http2.constants.NGHTTP2_CANCEL); reject(new Error(`no answer within ${timeoutMs} ms on ${path}`)); }, timeoutMs);
      const chunks: Buffer[] = [];
      let status = 0;
      let head = new Headers();
      let trailers = new Headers();
      req.on('response', (h) => { status = Number(h[':status']); head = toHeaders(h); });
      req.on('trailers', (t: http2.IncomingHttpHeaders) => { trailers = toHeaders(t); });
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => { clearTimeout(timer); resolve({ status, headers: head, body: Buffer.concat(chunks), trailers }); });
      req.on('error', (err: Error) => { clearTimeout(timer); reject(err); });
      req.end(body);
    });
  }

  private h1(verb: string, path: string, headers: Record<string, string>, body: Uint8Array, timeoutMs: number): Promise<RawResponse> {
    const url = new URL(path, this.baseUrl);
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method: verb, agent: this.agent, headers: { ...headers, 'content-length': String(body.byteLength) } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => { clearTimeout(timer); resolve({ status: res.statusCode ?? 0, headers: toHeaders(res.headers), body: Buffer.concat(chunks), trailers: toHeaders(res.trailers) }); });
        res.on('error', (err) => { clearTimeout(timer); reject(err); });
      });
      const timer = setTimeout(() => { req.destroy(); reject(new Error(`no answer within ${timeoutMs} ms on ${path}`)); }, timeoutMs);
      req.on('error', (err) => { clearTimeout(timer); reject(err); });
      req.end(body);
    });
  }
}

// HTTP status → code, as gRPC clients derive it when a response has no grpc-status.
function codeFromHttp(status: number): Code {
  switch (status) {
    case 400: return Code.Internal;
    case 401: return Code.Unauthenticated;
    case 403: return Code.PermissionDenied;
    case 404: return Code.Unimplemented;
    case 429: case 502: case 503: case 504: return Code.Unavailable;
    default: return Code.Unknown;
  }
}

function splitEnvelopes(bytes: Uint8Array): { flags: number; data: Uint8Array }[] {
  const out: { flags: number; data: Uint8Array }[] = [];
  let offset = 0;
  while (offset + 5 <= bytes.byteLength) {
    const len = new DataView(bytes.buffer, bytes.byteOffset + offset + 1, 4).getUint32(0);
    out.push({ flags: bytes[offset]!, data: bytes.subarray(offset + 5, offset + 5 + len) });
    offset += 5 + len;
  }
  if (offset !== bytes.byteLength) throw new Error(`response body ends inside a frame (${bytes.byteLength - offset} stray bytes)`);
  return out;
}

function decompress(encoding: string | null, data: Uint8Array): Uint8Array {
  if (encoding === 'gzip') return gunzipSync(data);
  if (encoding === 'br') return brotliDecompressSync(data);
  throw new Error(`compressed response with encoding ${encoding}`);
}

function outcome(http: number, err: ConnectError | undefined, body: Uint8Array | undefined, bareHttp = false): Outcome {
  return {
    http, ok: !err, code: err?.code, codeName: err ? codeToString(err.code) : 'ok', message: err?.rawMessage ?? '',
    detail: err?.findDetails(ErrorDetailSchema)[0], bareHttp, body,
  };
}

function readOutcome(wire: Wire, res: RawResponse): Outcome {
  if (wire.protocol === 'connect') {
    const type = res.headers.get('content-type') ?? '';
    // The server compresses a large answer (an error too) in the request's content-encoding.
    const encoding = res.headers.get('content-encoding');
    const body = encoding && encoding !== 'identity' ? decompress(encoding, res.body) : res.body;
    if (res.status === 200) return outcome(200, undefined, body);
    if (!type.startsWith('application/json')) return outcome(res.status, new ConnectError(`HTTP ${res.status}`, codeFromHttp(res.status)), undefined, true);
    return outcome(res.status, errorFromJsonBytes(body, undefined, new ConnectError(`HTTP ${res.status}`, Code.Unknown)), undefined);
  }
  let trailers = res.trailers;
  let message: Uint8Array | undefined;
  if (res.status === 200) {
    // Frames of a compressed response (the server answers in the request's grpc-encoding), the
    // gRPC-Web trailer frame included, carry flag 0x01.
    const encoding = res.headers.get('grpc-encoding');
    for (const framed of splitEnvelopes(res.body)) {
      const env = (framed.flags & 0x01) === 0x01 ? { flags: framed.flags ^ 0x01, data: decompress(encoding, framed.data) } : framed;
      if (wire.protocol === 'grpc-web' && (env.flags & 0x80) === 0x80) trailers = trailerParse(env.data);
      else message = env.data;
    }
  }
  // Trailers-only responses put the status in the headers.
  const status = trailers.get('grpc-status') ?? res.headers.get('grpc-status');
  if (status === null) return outcome(res.status, new ConnectError(`HTTP ${res.status}`, codeFromHttp(res.status)), undefined, true);
  const source = trailers.has('grpc-status') ? trailers : res.headers;
  const err = findTrailerError(source);
  if (err && String(err.code) !== status) throw new Error(`grpc-status ${status} disagrees with grpc-status-details-bin (${err.code})`);
  return outcome(res.status, err, err ? undefined : message);
}

/** Decodes a successful response in the wire's encoding. */
export const decodeResponse = <D extends DescMessage>(wire: Wire, schema: D, body: Uint8Array) =>
  wire.encoding === 'json' ? fromJsonString(schema, new TextDecoder().decode(body)) : fromBinary(schema, body);
