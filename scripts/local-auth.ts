// The local stack's token signer: an ES256 key pair under .stack/auth/ (git-ignored), created on
// first use. coupon-api trusts its public half (AUTH_JWKS_FILE) when no other JWKS is configured;
// `npm run -s token -- <role>` signs tokens with the private half. For development and tests only:
// production points AUTH_JWKS_URL at the identity provider's JWKS.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(process.env.STACK_DIR ?? join(root, '.stack'), 'auth');
export const localAuth = {
  dir,
  jwksFile: join(dir, 'jwks.json'),
  privateKeyFile: join(dir, 'signing-key.jwk.json'),
  // The defaults of AUTH_ISSUER and AUTH_AUDIENCE (src/config.ts).
  issuer: process.env.AUTH_ISSUER ?? 'coupon-local',
  audience: process.env.AUTH_AUDIENCE ?? 'coupon-api',
};

/** Creates the key pair if it is missing; returns the JWKS file coupon-api should trust. */
export async function ensureLocalKey(): Promise<string> {
  if (existsSync(localAuth.jwksFile) && existsSync(localAuth.privateKeyFile)) return localAuth.jwksFile;
  mkdirSync(dir, { recursive: true });
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const kid = `local-${Date.now().toString(36)}`;
  writeFileSync(localAuth.privateKeyFile, JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'ES256' }), { mode: 0o600 });
  writeFileSync(localAuth.jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] }, null, 2));
  return localAuth.jwksFile;
}

/**
 * Sets AUTH_JWKS_FILE in `env` to the local key when coupon-api would otherwise have no JWKS
 * (and auth is not off), creating the key if needed.
 */
export async function withLocalAuth<E extends Record<string, string | undefined>>(env: E): Promise<E & { AUTH_JWKS_FILE?: string }> {
  if (env.AUTH_MODE === 'off' || env.AUTH_JWKS_URL || env.AUTH_JWKS_FILE) return env;
  return { ...env, AUTH_JWKS_FILE: await ensureLocalKey() };
}

export interface LocalTokenOptions {
  roles: string[];
  sub?: string;
  ttlSeconds?: number;
  issuer?: string;
  audience?: string;
  notBefore?: number;
}

/** A token signed with the local key. */
export async function localToken({ roles, sub = `local-${roles.join('-') || 'none'}`, ttlSeconds = 3600, issuer = localAuth.issuer, audience = localAuth.audience, notBefore }: LocalTokenOptions): Promise<string> {
  await ensureLocalKey();
  const jwk = JSON.parse(readFileSync(localAuth.privateKeyFile, 'utf8')) as JWK & { kid: string };
  const key = await importJWK(jwk, 'ES256');
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ roles }).setProtectedHeader({ alg: 'ES256', kid: jwk.kid, typ: 'JWT' })
    .setSubject(sub).setIssuer(issuer).setAudience(audience).setIssuedAt(now).setExpirationTime(now + ttlSeconds);
  if (notBefore !== undefined) jwt.setNotBefore(notBefore);
  return jwt.sign(key);
}
