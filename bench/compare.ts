// `npm run bench -- --compare <git-ref>`: the code the gate runs, this checkout's and another
// commit's. The ref runs from a temporary worktree (git worktree add --detach) that uses this
// checkout's node_modules (linked; its package-lock.json dated before node_modules was installed, so
// nothing reinstalls), with a ledger database of its own (an older commit's services may refuse a
// database that newer migrations have touched) and a topic prefix of its own. Redis, Kafka and the
// registry are shared. The worktree is removed at the end, and the database dropped unless --keep.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync, symlinkSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDb, type Db } from '../src/store/db.ts';
import { config, uniqueEnv } from '../test/support/stack.ts';
import type { Code } from './gate.ts';

const root = join(import.meta.dirname, '..');
const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

/** This checkout as the gate runs it: HEAD, marked when the code differs from it. */
export function thisCheckout(env: Record<string, string>, db: Db): Code {
  const head = git('rev-parse', '--short', 'HEAD');
  const dirty = git('status', '--porcelain', '--', 'src', 'gen', 'proto', 'package.json') !== '';
  return { label: 'this checkout', commit: dirty ? `${head} with uncommitted changes` : head, root, env, db, created: [] };
}

export interface ComparedCode extends Code {
  database: string;
  /** Closes its ledger connections, drops its database (unless kept) and removes the worktree. */
  dispose(o: { keep: boolean; adminDb: Db }): Promise<string[]>;
}

/** Resolves `ref`, checks it out in a temporary worktree and gives it an empty ledger database. */
export async function prepareCompare(ref: string, adminDb: Db): Promise<ComparedCode> {
  let sha: string;
  try { sha = git('rev-parse', '--verify', '--quiet', `${ref}^{commit}`); } catch { throw new Error(`--compare ${ref}: no such commit in ${root}`); }
  const short = git('rev-parse', '--short', sha);
  const dir = mkdtempSync(join(tmpdir(), `coupon-bench-${short}-`));
  try {
    git('worktree', 'add', '--detach', dir, sha);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`--compare ${ref}: git worktree add failed: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`, { cause: err });
  }
  const removeWorktree = () => {
    try { git('worktree', 'remove', '--force', dir); } catch { rmSync(dir, { recursive: true, force: true }); git('worktree', 'prune'); }
  };
  const database = `bench_cmp_${short}`;
  try {
    for (const bin of ['api', 'issuer']) if (!existsSync(join(dir, 'src', 'bin', `${bin}.ts`))) throw new Error(`--compare ${ref}: ${short} has no src/bin/${bin}.ts to start`);
    // The same packages as this checkout; the lock file older than the install, so scripts/ensure-install.mjs would not run npm ci there.
    symlinkSync(realpathSync(join(root, 'node_modules')), join(dir, 'node_modules'));
    const lock = join(dir, 'package-lock.json');
    if (existsSync(lock)) utimesSync(lock, new Date('2020-01-01'), new Date('2020-01-01'));
    // Left by an earlier --keep run, or fresh: either way, empty now.
    await adminDb.raw(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    await adminDb.raw(`CREATE DATABASE "${database}"`);
  } catch (err) {
    removeWorktree();
    throw err;
  }
  const url = new URL(config.DATABASE_URL);
  url.pathname = `/${database}`;
  const env = { ...uniqueEnv(`bench-cmp-${short}`), DATABASE_URL: url.toString() };
  const db = createDb(env.DATABASE_URL, 4);
  return {
    label: ref, commit: short, root: dir, env, db, created: [], database,
    async dispose({ keep, adminDb: admin }) {
      const notes: string[] = [];
      await db.destroy();
      if (keep) notes.push(`kept database ${database} (${ref}'s ledger; DROP DATABASE "${database}" when done)`);
      else await admin.raw(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
      removeWorktree();
      return notes;
    },
  };
}
