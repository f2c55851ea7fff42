// Every error a CouponService call answers carries a coupon.v1.ErrorDetail (the reasons are listed
// in proto/coupon/v1/error.proto), whichever layer refuses the call:
// - errorMapping, an interceptor, maps what domain code throws: DomainError → its reason's code;
//   an unreachable or overloaded dependency → UNAVAILABLE (BACKEND_UNAVAILABLE); anything else →
//   INTERNAL (INTERNAL_ERROR), logged with the procedure name.
// - completeTransportErrors, a per-call hook, completes the errors connect-es raises itself while it
//   reads the request, before any interceptor runs (see there).
// - unknownMethod, the adapter's fallback, answers a path under the service that names no method.
// And strictJson says how JSON requests are read.
import type http from 'node:http';
import { Code, ConnectError, type HandlerContext, type Interceptor } from '@connectrpc/connect';
import type { ConnectNodeAdapterOptions } from '@connectrpc/connect-node';
import { encodeEnvelope } from '@connectrpc/connect/protocol';
import { codeToHttpStatus, codeToString, errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import { setTrailerStatus } from '@connectrpc/connect/protocol-grpc';
import { trailerFlag, trailerSerialize } from '@connectrpc/connect/protocol-grpc-web';
import { create, type DescMethod } from '@bufbuild/protobuf';
import { isFieldError } from '@bufbuild/protobuf/reflect';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';
import { DomainError, type ErrorReason } from '../domain/errors.ts';
import { isOutage } from '../domain/outage.ts';
import type { Logger } from '../log.ts';
import { apiError, codeOf, hasErrorDetail } from './errors.ts';

export function errorMapping(log: Logger): Interceptor {
  // A DomainError thrown again and again (the gate's refusals of a sold-out coupon) is mapped once.
  const mapped = new WeakMap<DomainError, ConnectError>();
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      if (err instanceof DomainError) {
        let answer = mapped.get(err);
        if (!answer) {
          answer = apiError(codeOf[err.reason], err.reason, err.message, { field: err.field, metadata: err.metadata });
          mapped.set(err, answer);
        }
        throw answer;
      }
      if (isOutage(err)) {
        log.warn({ procedure: req.method.name, err: (err as Error).message }, 'dependency unavailable');
        throw apiError(Code.Unavailable, 'BACKEND_UNAVAILABLE', 'a backing store is unreachable or overloaded; retry later');
      }
      log.error({ procedure: req.method.name, err }, 'unexpected error');
      throw apiError(Code.Internal, 'INTERNAL_ERROR', 'internal error');
    }
  };
}

interface Completion { reason: ErrorReason; message: string; field?: string }

/** protobuf-es names the field of a JSON value it cannot read in an error somewhere down the causes. */
function fieldAtFault(err: Error) {
  let cause: unknown = err.cause;
  for (let depth = 0; depth < 4 && cause instanceof Error; depth++, cause = cause.cause) {
    if (isFieldError(cause)) return cause;
  }
  return undefined;
}

/**
 * An enum name the enum does not have comes without a FieldError, only the enum's type in the
 * message: the request field of that type, when it has exactly one.
 */
function enumFieldOf(raw: string, method: DescMethod): string | undefined {
  const enumType = /cannot decode enum ([\w.]+) from JSON/.exec(raw)?.[1];
  const fields = enumType ? method.input.fields.filter((f) => f.enum?.typeName === enumType) : [];
  return fields.length === 1 ? fields[0]!.name : undefined;
}

/**
 * What a request refused by connect-es itself was, or undefined for an error this does not know.
 * connect-es labels a protobuf body that does not decode INTERNAL ("parse binary: …"), and a unary
 * call with no message or two UNIMPLEMENTED; both are the caller's bytes, so INVALID_ARGUMENT here.
 */
function classify(err: ConnectError, method: DescMethod): Completion | undefined {
  const raw = err.rawMessage;
  const malformed = (why: string, field?: string): Completion =>
    ({ reason: 'MALFORMED_REQUEST', message: `malformed ${method.input.typeName}: ${why}`, ...(field ? { field } : {}) });
  switch (err.code) {
    case Code.InvalidArgument: {
      // JSON that does not fit the message, bad framing, undecodable compressed data, a bad timeout
      // header. A JSON value of the wrong type names its field.
      const f = fieldAtFault(err)?.field();
      return malformed(raw, f && f.kind === 'field' && f.parent.typeName === method.input.typeName ? f.name : enumFieldOf(raw, method));
    }
    case Code.Internal:
      if (/^parse binary: |^decompression failed|do not know how to decompress/.test(raw)) return malformed(raw);
      return undefined;
    case Code.Unimplemented:
      if (/^unknown compression/.test(raw)) return { reason: 'UNSUPPORTED_COMPRESSION', message: raw };
      if (/input message for unary method/.test(raw)) return malformed(raw.replace(/^protocol error: /, ''));
      return undefined;
    case Code.ResourceExhausted:
      // writeMaxBytes is the server's own answer outgrowing its limit: a bug, not the caller's.
      return /readMaxBytes/.test(raw) ? { reason: 'REQUEST_TOO_LARGE', message: raw } : { reason: 'INTERNAL_ERROR', message: raw };
    default:
      return undefined;
  }
}

type Writable = { -readonly [K in 'code' | 'rawMessage' | 'message']: ConnectError[K] };

/**
 * A per-call hook (connect-es runs it once per call, before the body is read) that gives an ErrorDetail to the
 * errors connect-es raises itself for a CouponService call: a body that does not decode, JSON of the
 * wrong shape, a message over the size limit, unknown compression, a unary call without exactly one
 * message. connect-es raises these before any interceptor runs, and writes them to the wire without
 * details. It does hand every error to the call's abort signal before writing it (all three
 * protocols), so the gate listens there and completes the error in place: the detail is added, and
 * a code connect-es got wrong for the caller's bytes (INTERNAL, UNIMPLEMENTED) becomes
 * INVALID_ARGUMENT. Errors that already carry a detail (everything errorMapping throws) are left
 * alone. test/server/bad-input.test.ts pins this down for every protocol, so a connect-es upgrade
 * that changes the order fails there.
 *
 * For every service it also makes the message well-formed Unicode. V8's JSON.parse errors quote
 * the body and can cut an astral character in half; connect-es puts the message through
 * encodeURIComponent for grpc-message, which throws on a lone surrogate, and the gRPC or gRPC-Web
 * call then never ends (found by the fuzzer: fuzz/).
 */
export function completeTransportErrors(log: Logger): (context: HandlerContext) => void {
  return (context) => {
    const couponService = context.service.typeName === CouponService.typeName;
    const signal = context.signal;
    signal.addEventListener('abort', () => {
      const err: unknown = signal.reason;
      if (!(err instanceof ConnectError)) return;
      const writable = err as Writable;
      if (!err.rawMessage.isWellFormed()) {
        writable.rawMessage = err.rawMessage.toWellFormed();
        writable.message = err.message.toWellFormed();
      }
      if (!couponService || hasErrorDetail(err)) return;
      const completion = classify(err, context.method);
      if (!completion) {
        if (err.code !== Code.Canceled && err.code !== Code.DeadlineExceeded && err.code !== Code.Aborted) {
          log.warn({ procedure: context.method.name, code: codeToString(err.code), err: err.rawMessage }, 'RPC layer error without a known reason');
        }
        return;
      }
      const code = codeOf[completion.reason];
      writable.code = code;
      writable.rawMessage = completion.message.toWellFormed();
      writable.message = `[${codeToString(code)}] ${writable.rawMessage}`;
      err.details.push({ desc: ErrorDetailSchema, value: create(ErrorDetailSchema, { reason: completion.reason, field: completion.field ?? '' }) });
    }, { once: true });
  };
}

// JSON requests are read strictly. A key the message does not have is refused (connect-es ignores
// it by default): a misspelt optional field such as "closeAt" would otherwise be dropped in
// silence and change what the call means. Binary requests keep protobuf's rule (unknown fields are
// skipped), which is what lets a newer client talk to an older server. Bytes that are not UTF-8 are
// refused too, instead of being replaced with U+FFFD (connect-es reads this option, though its
// handler options do not declare it).
export const strictJson = { ignoreUnknownFields: false, textDecoder: new TextDecoder('utf-8', { fatal: true }) };

/**
 * A path that no route serves. Under /coupon.v1.CouponService/ it is a method this server does not
 * have (a client newer than the server, or a typo): UNIMPLEMENTED with an ErrorDetail
 * (UNKNOWN_METHOD) in the caller's protocol, written the way connect-es writes its own errors.
 * Anything else, or a content type of no protocol, is a bare HTTP 404 as before.
 */
export const unknownMethod: NonNullable<ConnectNodeAdapterOptions['fallback']> = (req, res) => {
  // Both Node response types take writeHead(status, headers) and end(bytes).
  const answer = res as unknown as http.ServerResponse;
  const path = (req.url ?? '').split('?')[0] ?? '';
  const type = req.headers['content-type'] ?? '';
  const protocol = /^application\/grpc-web(?:[+;]|$)/i.test(type) ? 'grpc-web'
    : /^application\/grpc(?:[+;]|$)/i.test(type) ? 'grpc'
    : /^application\/(?:proto|json)(?:;|$)/i.test(type) ? 'connect' : undefined;
  const prefix = `/${CouponService.typeName}/`;
  if (!protocol || !path.startsWith(prefix)) {
    answer.writeHead(404);
    answer.end();
    return;
  }
  const err = apiError(Code.Unimplemented, 'UNKNOWN_METHOD', `${CouponService.typeName} has no method ${JSON.stringify(path.slice(prefix.length))}`);
  const status = setTrailerStatus(new Headers(), err);
  if (protocol === 'connect') {
    const body = errorToJsonBytes(err, undefined);
    answer.writeHead(codeToHttpStatus(err.code), { 'content-type': 'application/json', 'content-length': String(body.byteLength) });
    answer.end(body);
  } else if (protocol === 'grpc-web') {
    answer.writeHead(200, { 'content-type': type });
    answer.end(encodeEnvelope(trailerFlag, trailerSerialize(status)));
  } else {
    answer.writeHead(200, { 'content-type': type });
    answer.addTrailers(Object.fromEntries(status));
    answer.end();
  }
};
