// Maps what domain code throws to what callers see: DomainError → its reason's code with an
// ErrorDetail; an unreachable dependency → UNAVAILABLE (BACKEND_UNAVAILABLE); anything else →
// INTERNAL, logged with the procedure name.
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { DomainError } from '../domain-error.ts';
import type { Logger } from '../log.ts';
import { apiError, codeOf, isOutage } from './errors.ts';

export function errorMapping(log: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (err instanceof ConnectError) throw err;
      if (err instanceof DomainError) throw apiError(codeOf[err.reason], err.reason, err.message, { metadata: err.metadata });
      if (isOutage(err)) {
        log.warn({ procedure: req.method.name, err: (err as Error).message }, 'dependency unavailable');
        throw apiError(Code.Unavailable, 'BACKEND_UNAVAILABLE', 'a backing store is unreachable; retry later');
      }
      log.error({ procedure: req.method.name, err }, 'unexpected error');
      throw new ConnectError('internal error', Code.Internal);
    }
  };
}
