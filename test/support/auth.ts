// Bearer tokens for tests, signed with the local stack's key (scripts/local-auth.ts), which the
// coupon-api processes the tests start trust (AUTH_JWKS_FILE, set by npm test and the global setup).
import { localToken } from '../../scripts/local-auth.ts';

export type Role = 'operator' | 'storefront' | 'payment';

const cached = new Map<string, Promise<string>>();
/** A token for the roles, valid for an hour, reused across calls like a real client would. */
export function tokenFor(...roles: Role[]): Promise<string> {
  const key = roles.join(',');
  let token = cached.get(key);
  if (!token) { token = localToken({ roles, sub: `test-${key || 'none'}` }); cached.set(key, token); }
  return token;
}

export const authHeader = async (...roles: Role[]) => ({ authorization: `Bearer ${await tokenFor(...roles)}` });
