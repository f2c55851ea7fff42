// Domain functions throw DomainError with a stable reason; the server maps reasons to codes in one
// table (src/server/errors.ts), so business rules never import transport types.
import type { ErrorReason } from './server/errors.ts';

export class DomainError extends Error {
  override name = 'DomainError';
  readonly reason: ErrorReason;
  readonly metadata: Record<string, string>;
  constructor(reason: ErrorReason, message: string, metadata: Record<string, string> = {}, cause?: unknown) {
    super(message, { cause });
    this.reason = reason;
    this.metadata = metadata;
  }
}
