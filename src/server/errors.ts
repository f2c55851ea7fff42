// Errors callers can branch on: a Connect/gRPC code that means what it says, plus a
// coupon.v1.ErrorDetail with a stable reason (see proto/coupon/v1/error.proto for the list).
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';

export type ErrorReason =
  | 'INVALID_FIELD' | 'COUPON_NOT_FOUND' | 'COUPON_NOT_OPEN' | 'COUPON_CLOSED'
  | 'COUPON_SOLD_OUT' | 'PUBLISH_FAILED' | 'BACKEND_UNAVAILABLE' | 'COUPON_NOT_ISSUED'
  | 'COUPON_ALREADY_REDEEMED' | 'COUPON_EXPIRED' | 'REDEMPTION_CANCELLED' | 'ORDER_MISMATCH'
  | 'INVALID_PAGE_TOKEN';

export function apiError(code: Code, reason: ErrorReason, message: string, extra: { field?: string; metadata?: Record<string, string> } = {}): ConnectError {
  const detail = create(ErrorDetailSchema, { reason, field: extra.field ?? '', metadata: extra.metadata ?? {} });
  return new ConnectError(message, code, undefined, [{ desc: ErrorDetailSchema, value: detail }]);
}

export const invalidField = (field: string, problem: string) =>
  apiError(Code.InvalidArgument, 'INVALID_FIELD', `${field}: ${problem}`, { field });

/** The one table from reason to code. */
export const codeOf: Record<ErrorReason, Code> = {
  INVALID_FIELD: Code.InvalidArgument,
  INVALID_PAGE_TOKEN: Code.InvalidArgument,
  COUPON_NOT_FOUND: Code.NotFound,
  COUPON_NOT_OPEN: Code.FailedPrecondition,
  COUPON_CLOSED: Code.FailedPrecondition,
  COUPON_SOLD_OUT: Code.ResourceExhausted,
  PUBLISH_FAILED: Code.Unavailable,
  BACKEND_UNAVAILABLE: Code.Unavailable,
  COUPON_NOT_ISSUED: Code.FailedPrecondition,
  COUPON_ALREADY_REDEEMED: Code.FailedPrecondition,
  COUPON_EXPIRED: Code.FailedPrecondition,
  REDEMPTION_CANCELLED: Code.FailedPrecondition,
  ORDER_MISMATCH: Code.FailedPrecondition,
};

/** True for errors that mean a dependency is unreachable right now (retry later). */
export function isOutage(err: unknown): boolean {
  const e = err as { code?: string; name?: string; message?: string };
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', '57P01', '57P03', '08006', '08001'].includes(e.code ?? '')) return true;
  if (['KnexTimeoutError', 'MaxRetriesPerRequestError'].includes(e.name ?? '')) return true;
  return /Stream isn't writeable|Connection is closed|Connection terminated|connect ECONNREFUSED/.test(e.message ?? '');
}
