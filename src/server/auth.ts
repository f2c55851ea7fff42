// Who may call what (docs/design.md#callers-are-services-with-identities). Every CouponService call
// carries `Authorization: Bearer <JWT>`, verified with jose against a JWKS with issuer and audience
// checked; the token's `roles` claim must name one of the roles the RPC's coupon.v1.allowed_roles
// option lists (proto/coupon/v1/access.proto), and LIMITS below narrows a role to some requests of an
// RPC (a storefront lists open coupons only). Health and reflection stay open for probes and
// grpcurl. Verified tokens are cached until they expire, so the gate pays for a signature check
// once per caller token, not once per call.
import { readFileSync } from 'node:fs';
import { Code, createContextKey, type Interceptor } from '@connectrpc/connect';
import { getOption, type DescMethod } from '@bufbuild/protobuf';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { allowed_roles } from '../../gen/coupon/v1/access_pb.js';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { CouponStatus } from '../../gen/coupon/v1/coupon_pb.js';
import type { Logger } from '../log.ts';
import { countIssueCall } from '../metrics/grpc.ts';
import { apiError, type AuthReason } from './errors.ts';

export interface Caller { sub: string; roles: string[] }

/** The verified caller of this call, for handlers that record who did what; 'anonymous' with AUTH_MODE=off. */
export const callerKey = createContextKey<Caller>({ sub: 'anonymous', roles: [] }, { description: 'the verified caller' });

export interface AuthOptions {
  /** The keys that sign callers' tokens. */
  keys: JWTVerifyGetKey;
  issuer: string;
  audience: string;
  log: Logger;
  /** Most verified tokens remembered at once (oldest forgotten first). */
  cacheSize?: number;
}

/** The JWKS named by AUTH_JWKS_URL (fetched and refreshed by jose) or AUTH_JWKS_FILE (read once). */
export function jwksFrom(o: { url?: string | undefined; file?: string | undefined }): JWTVerifyGetKey {
  if (o.url) return createRemoteJWKSet(new URL(o.url), { timeoutDuration: 2_000, cooldownDuration: 30_000 });
  if (o.file) return createLocalJWKSet(JSON.parse(readFileSync(o.file, 'utf8')) as JSONWebKeySet);
  throw new Error('no JWKS configured');
}

// Operator and payment RPCs that change state: each successful call leaves an audit line naming
// the caller and what changed. IssueCoupon is the hot path of a sale: its callers are counted in
// coupon_issue_calls_total{caller} instead of a line per call (a handful of storefront services, so
// the label stays small; only a token signed by a trusted key can name a new one).
const AUDITED = new Set(['CreateCoupon', 'RedeemCoupon', 'CancelRedemption', 'UpdateCoupon', 'PauseCoupon', 'ResumeCoupon', 'CloseCoupon']);

interface AuditedMessage { coupon?: { id: string; totalQuantity: bigint }; userCoupon?: { couponId: string; userId: string; orderId: string } }
interface AuditedRequest { orderId?: string }

/** What an audited call changed, from its answer (canonical ids) and request. */
function audited(response: unknown, request: unknown): Record<string, string> {
  const m = response as AuditedMessage;
  if (m.coupon) return { coupon_id: m.coupon.id, total_quantity: String(m.coupon.totalQuantity) };
  if (m.userCoupon) return { coupon_id: m.userCoupon.couponId, user_id: m.userCoupon.userId, order_id: (request as AuditedRequest).orderId ?? '' };
  return {};
}

const refuse = (code: Code, reason: AuthReason, message: string) => apiError(code, reason, message);

// Each method's allowed_roles, read from the contract once: reading an option builds an extension
// container on every call, which showed in a CPU profile of a sale.
const allowedRoles = new Map<DescMethod, readonly string[]>();
function rolesOf(method: DescMethod): readonly string[] {
  let roles = allowedRoles.get(method);
  if (!roles) {
    roles = getOption(method, allowed_roles);
    allowedRoles.set(method, roles);
  }
  return roles;
}

/**
 * Roles an RPC's allowed_roles lets in for some requests only (docs/api.md#listcoupons): a caller
 * whose only allowed role is `role` must send a request `permits` accepts, or is refused naming
 * `field`. A caller that also has an unlimited allowed role is not limited.
 */
interface Limit { role: string; field: string; permits: (request: unknown) => boolean; rule: string }
const LIMITS: Record<string, Limit> = {
  ListCoupons: {
    role: 'storefront', field: 'status', rule: 'a storefront may list open coupons only: set status to COUPON_STATUS_OPEN',
    permits: (request) => (request as { status?: CouponStatus }).status === CouponStatus.OPEN,
  },
};

export function authInterceptor(o: AuthOptions): Interceptor {
  const cache = new Map<string, { caller: Caller; expiresAtMs: number }>();
  const cacheSize = o.cacheSize ?? 10_000;

  // The last few Authorization headers verified, compared as they came: a sale's calls come from a
  // handful of storefront services, each with one token at a time, so most calls are found here
  // without parsing the header or hashing the token.
  const recent: { header: string; caller: Caller; expiresAtMs: number }[] = [];
  const RECENT = 8;

  const verify = async (token: string): Promise<{ caller: Caller; expiresAtMs: number }> => {
    const hit = cache.get(token);
    if (hit && hit.expiresAtMs > Date.now()) return hit;
    if (hit) cache.delete(token);
    try {
      const { payload } = await jwtVerify(token, o.keys, { issuer: o.issuer, audience: o.audience, requiredClaims: ['exp', 'sub'] });
      const roles = Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === 'string') : [];
      const verified = { caller: { sub: payload.sub!, roles }, expiresAtMs: payload.exp! * 1000 };
      if (cache.size >= cacheSize) cache.delete(cache.keys().next().value!);
      cache.set(token, verified);
      return verified;
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw refuse(Code.Unauthenticated, 'TOKEN_EXPIRED', 'the bearer token has expired');
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf') throw refuse(Code.Unauthenticated, 'TOKEN_EXPIRED', 'the bearer token is not valid yet');
      if (err instanceof joseErrors.JOSEError) throw refuse(Code.Unauthenticated, 'TOKEN_INVALID', `the bearer token was refused: ${err.message}`);
      // The JWKS could not be fetched: an outage, not the caller's fault.
      throw apiError(Code.Unavailable, 'BACKEND_UNAVAILABLE', 'the signing keys could not be fetched; retry');
    }
  };

  /** The caller an Authorization header names, verified; refuses a missing or bad token. */
  const verifyHeader = async (procedure: string, header: string): Promise<Caller> => {
    const match = /^Bearer\s+([A-Za-z0-9._~+/-]+=*)\s*$/i.exec(header);
    if (!match) {
      o.log.warn({ procedure, refused: 'TOKEN_MISSING' }, 'call refused: no bearer token');
      throw refuse(Code.Unauthenticated, 'TOKEN_MISSING', 'this call needs an Authorization: Bearer <JWT> header');
    }
    let verified: { caller: Caller; expiresAtMs: number };
    try {
      verified = await verify(match[1]!);
    } catch (err) {
      // The sub the token claims, unverified, so the refusal names who it says it is.
      let claimedSub: unknown;
      try { claimedSub = decodeJwt(match[1]!).sub; } catch { claimedSub = undefined; }
      o.log.warn({ procedure, claimedSub, refused: (err as Error).message }, 'call refused: bad bearer token');
      throw err;
    }
    const i = recent.findIndex((r) => r.header === header);
    if (i >= 0) recent.splice(i, 1);
    else if (recent.length >= RECENT) recent.shift();
    recent.push({ header, ...verified });
    return verified.caller;
  };

  return (next) => async (req) => {
    if (req.service.typeName !== CouponService.typeName) return next(req);
    const procedure = req.method.name;
    const header = req.header.get('authorization') ?? '';
    let caller: Caller | undefined;
    for (const r of recent) {
      if (r.header === header && r.expiresAtMs > Date.now()) { caller = r.caller; break; }
    }
    caller ??= await verifyHeader(procedure, header);
    const allowed = rolesOf(req.method);
    if (!caller.roles.some((r) => allowed.includes(r))) {
      o.log.warn({ procedure, sub: caller.sub, roles: caller.roles, allowed, refused: 'ROLE_NOT_ALLOWED' }, 'call refused: role not allowed');
      throw refuse(Code.PermissionDenied, 'ROLE_NOT_ALLOWED', `${procedure} needs one of the roles ${allowed.join(', ')}; the caller has ${caller.roles.join(', ') || 'none'}`);
    }
    const limit = LIMITS[procedure];
    if (limit && !caller.roles.some((r) => r !== limit.role && allowed.includes(r)) && (req.stream || !limit.permits(req.message))) {
      o.log.warn({ procedure, sub: caller.sub, roles: caller.roles, field: limit.field, refused: 'ROLE_NOT_ALLOWED' }, 'call refused: role not allowed');
      throw apiError(Code.PermissionDenied, 'ROLE_NOT_ALLOWED', `${procedure}: ${limit.rule}`, { field: limit.field, metadata: { role: limit.role } });
    }
    if (procedure === 'IssueCoupon') countIssueCall(caller.sub);
    req.contextValues.set(callerKey, caller);
    const res = await next(req);
    if (AUDITED.has(procedure) && !res.stream) o.log.info({ procedure, sub: caller.sub, ...audited(res.message, req.message) }, 'audit');
    return res;
  };
}
