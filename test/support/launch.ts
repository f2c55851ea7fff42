// How coupon-api and coupon-issuer are started outside `npm start`, in one place for the tests,
// the chaos run and the bench: `node src/bin/<name>.ts` from a checkout, as `npm start` runs it,
// with production's JSON logs unless told otherwise. The callers differ in what they do with the
// output (tests parse every line, the bench and the chaos run write it to files) and in supervision.
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { withLocalAuth } from '../../scripts/local-auth.ts';

export const repoRoot = join(import.meta.dirname, '..', '..');

export type ServiceName = 'api' | 'issuer';

/** The log line each service writes once it is ready. */
export const READY_MSG: Record<ServiceName, string> = { api: 'coupon-api listening', issuer: 'coupon-issuer consuming' };

export interface LaunchOptions {
  /** The checkout whose src/bin/<name>.ts runs [this one]. */
  root?: string;
  /** Trust the local signing key (scripts/local-auth.ts) as `npm start` does, unless `env` configures auth [true]. */
  localAuth?: boolean;
}

/**
 * Spawns one service with stdout and stderr piped. Defaults under `env`: every port 0 (the kernel
 * picks; the ready line says which), LOG_LEVEL info, JSON logs.
 */
export async function launchService(name: ServiceName, env: Record<string, string>, o: LaunchOptions = {}): Promise<ChildProcessByStdio<null, Readable, Readable>> {
  const merged = serviceEnv(env);
  return spawnService(name, o.localAuth === false ? merged : await withLocalAuth(merged), o.root);
}

/** The environment a service starts with: this process's, the defaults above, then `env`. */
const serviceEnv = (env: Record<string, string | undefined>): Record<string, string | undefined> =>
  ({ ...process.env, API_PORT: '0', API_METRICS_PORT: '0', ISSUER_METRICS_PORT: '0', LOG_LEVEL: 'info', LOG_PRETTY: 'false', ...env });

/**
 * The same, at once and with `env` as given (no local signing key added): for a supervisor that
 * restarts a service from an exit handler (the chaos run), with the auth settings already in `env`.
 */
export function spawnService(name: ServiceName, env: Record<string, string | undefined>, root = repoRoot): ChildProcessByStdio<null, Readable, Readable> {
  return spawn(process.execPath, [join(root, 'src', 'bin', `${name}.ts`)], {
    cwd: root,
    env: serviceEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
