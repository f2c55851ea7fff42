// Errors the domain raises, with a stable reason callers can branch on. The domain knows no
// transport: src/server/errors.ts maps each reason to a Connect/gRPC code in one table, and the
// Kafka consumers map them to retry or dead-letter. The reasons are listed for callers in
// proto/coupon/v1/error.proto. MALFORMED_REQUEST, REQUEST_TOO_LARGE, UNSUPPORTED_COMPRESSION,
// UNKNOWN_METHOD and INTERNAL_ERROR are never raised by the domain: the server gives them to what its
// RPC layer refuses before a handler runs, and to failures nobody foresaw (src/server/interceptors.ts).
export type ErrorReason =
  | 'INVALID_FIELD' | 'MALFORMED_REQUEST' | 'REQUEST_TOO_LARGE' | 'UNSUPPORTED_COMPRESSION' | 'UNKNOWN_METHOD' | 'INTERNAL_ERROR'
  | 'COUPON_NOT_FOUND' | 'COUPON_NOT_OPEN' | 'COUPON_CLOSED'
  | 'COUPON_SOLD_OUT' | 'PUBLISH_FAILED' | 'BACKEND_UNAVAILABLE' | 'COUPON_NOT_ISSUED'
  | 'COUPON_ALREADY_REDEEMED' | 'COUPON_EXPIRED' | 'REDEMPTION_CANCELLED' | 'ORDER_MISMATCH'
  | 'INVALID_PAGE_TOKEN' | 'COUPON_PAUSED' | 'QUANTITY_BELOW_ACCEPTED' | 'COUPON_FINISHED';

export class DomainError extends Error {
  override name = 'DomainError';
  readonly reason: ErrorReason;
  readonly metadata: Record<string, string>;
  /** The request field at fault, for INVALID_FIELD. */
  readonly field: string | undefined;
  constructor(reason: ErrorReason, message: string, metadata: Record<string, string> = {}, cause?: unknown, field?: string) {
    super(message, { cause });
    this.reason = reason;
    this.metadata = metadata;
    this.field = field;
  }
}

/**
 * Builds an error without capturing a stack trace: for the answers a sale gives by the thousand
 * (sold out, closed, not open, paused, unknown coupon), where the trace says nothing and capturing
 * it was among the larger costs of a refused IssueCoupon in a CPU profile (docs/performance.md).
 */
export function withoutStack<E extends Error>(make: () => E): E {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** An expected refusal of the domain: a DomainError without a stack trace. */
export const refusal = (reason: ErrorReason, message: string, metadata: Record<string, string> = {}) =>
  withoutStack(() => new DomainError(reason, message, metadata));

/** A request field that breaks a rule: INVALID_FIELD, naming the field. */
export const invalidField = (field: string, problem: string) =>
  new DomainError('INVALID_FIELD', `${field}: ${problem}`, {}, undefined, field);

/** Reasons that mean "a dependency is down, nothing was decided": retry later, never dead-letter. */
export const isRetryableReason = (reason: ErrorReason) => reason === 'BACKEND_UNAVAILABLE' || reason === 'PUBLISH_FAILED';

/**
 * Internal, never a caller's answer: Redis lost state while the gate (gate/gate-load.ts) or the
 * redemption state (redemption/redemption-scripts.ts) was loaded from the ledger. Nothing was armed
 * or marked loaded; the load starts over from the loss guard's wait (store/loss-guard.ts).
 */
export class LoadInterrupted extends Error {
  constructor(what: string) {
    super(`Redis lost ${what} while it was loaded from the ledger; the load starts over`);
    this.name = 'LoadInterrupted';
  }
}
