export declare const localAuth: { dir: string; jwksFile: string; privateKeyFile: string; issuer: string; audience: string };
export declare function ensureLocalKey(): Promise<string>;
export declare function withLocalAuth<E extends Record<string, string | undefined>>(env: E): Promise<E & { AUTH_JWKS_FILE?: string }>;
export declare function localToken(o?: { roles: string[]; sub?: string; ttlSeconds?: number; issuer?: string; audience?: string; notBefore?: number }): Promise<string>;
