// What callers see of an error: a Connect/gRPC code that means what it says, plus a
// coupon.v1.ErrorDetail with a stable reason (the list is in proto/coupon/v1/error.proto). The
// domain raises reasons (src/domain/errors.ts); this is the one table from reason to code.
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';
import { withoutStack, type ErrorReason } from '../domain/errors.ts';

/** Reasons of refusals made by the server itself, before any domain code runs. */
export type AuthReason = 'TOKEN_MISSING' | 'TOKEN_INVALID' | 'TOKEN_EXPIRED' | 'ROLE_NOT_ALLOWED';

/** The error a caller sees. Its stack trace would point here and never reaches the caller, so none is captured. */
export function apiError(code: Code, reason: ErrorReason | AuthReason, message: string, extra: { field?: string | undefined; metadata?: Record<string, string> } = {}): ConnectError {
  const detail = create(ErrorDetailSchema, { reason, field: extra.field ?? '', metadata: extra.metadata ?? {} });
  return withoutStack(() => new ConnectError(message, code, undefined, [{ desc: ErrorDetailSchema, value: detail }]));
}

export const codeOf: Record<ErrorReason, Code> = {
  INVALID_FIELD: Code.InvalidArgument,
  INVALID_PAGE_TOKEN: Code.InvalidArgument,
  MALFORMED_REQUEST: Code.InvalidArgument,
  REQUEST_TOO_LARGE: Code.ResourceExhausted,
  UNSUPPORTED_COMPRESSION: Code.Unimplemented,
  UNKNOWN_METHOD: Code.Unimplemented,
  INTERNAL_ERROR: Code.Internal,
  COUPON_NOT_FOUND: Code.NotFound,
  COUPON_NOT_OPEN: Code.FailedPrecondition,
  COUPON_CLOSED: Code.FailedPrecondition,
  COUPON_PAUSED: Code.FailedPrecondition,
  QUANTITY_BELOW_ACCEPTED: Code.FailedPrecondition,
  COUPON_FINISHED: Code.FailedPrecondition,
  COUPON_SOLD_OUT: Code.ResourceExhausted,
  PUBLISH_FAILED: Code.Unavailable,
  BACKEND_UNAVAILABLE: Code.Unavailable,
  COUPON_NOT_ISSUED: Code.FailedPrecondition,
  COUPON_ALREADY_REDEEMED: Code.FailedPrecondition,
  COUPON_EXPIRED: Code.FailedPrecondition,
  REDEMPTION_CANCELLED: Code.FailedPrecondition,
  ORDER_MISMATCH: Code.FailedPrecondition,
};

/** Whether the error already carries a coupon.v1.ErrorDetail. */
export const hasErrorDetail = (err: ConnectError) =>
  err.details.some((d) => 'desc' in d ? d.desc.typeName === ErrorDetailSchema.typeName : d.type === ErrorDetailSchema.typeName);
