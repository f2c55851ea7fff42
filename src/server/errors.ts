// Errors callers can branch on: a Connect/gRPC code that means what it says, plus a
// coupon.v1.ErrorDetail with a stable reason (see proto/coupon/v1/error.proto for the list).
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';

export type ErrorReason =
  | 'INVALID_FIELD' | 'MESSAGE_TOO_LARGE' | 'COUPON_NOT_FOUND' | 'COUPON_NOT_OPEN' | 'COUPON_CLOSED'
  | 'COUPON_SOLD_OUT' | 'PUBLISH_FAILED' | 'BACKEND_UNAVAILABLE' | 'COUPON_NOT_ISSUED'
  | 'COUPON_ALREADY_REDEEMED' | 'COUPON_EXPIRED' | 'REDEMPTION_CANCELLED' | 'ORDER_MISMATCH'
  | 'INVALID_PAGE_TOKEN';

export function apiError(code: Code, reason: ErrorReason, message: string, extra: { field?: string; metadata?: Record<string, string> } = {}): ConnectError {
  const detail = create(ErrorDetailSchema, { reason, field: extra.field ?? '', metadata: extra.metadata ?? {} });
  return new ConnectError(message, code, undefined, [{ desc: ErrorDetailSchema, value: detail }]);
}

export const invalidField = (field: string, problem: string) =>
  apiError(Code.InvalidArgument, 'INVALID_FIELD', `${field}: ${problem}`, { field });
