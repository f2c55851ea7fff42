// `npm run test:cluster`: the proofs (test-cluster/, vitest.cluster.config.ts) on
// the clustered local stack. It does not start that stack: `npm run stack:up -- --cluster` first.
// Extra arguments go to vitest: `npm run test:cluster -- -t redemption`.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clusterPresent, clusterStatusRows } from './cluster-stack.ts';
import { cfg, postgresProblem } from './stack.ts';
import { withLocalAuth } from './local-auth.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fail = (msg: string): never => { console.error(`[test:cluster] ${msg}`); process.exit(1); };

const pg = await postgresProblem();
if (pg) fail(pg);
const registry = `http://127.0.0.1:${cfg.registryPort}/apis/ccompat/v7/subjects`;
const registryUp = await fetch(registry, { signal: AbortSignal.timeout(10_000) }).then((r) => r.ok, () => false);
if (!registryUp) fail('the schema registry (shared with the single stack) does not answer: run npm run stack:up -- --cluster first');
if (!clusterPresent()) fail('the clustered stack is not running: run npm run stack:up -- --cluster first');
const down = (await clusterStatusRows()).filter((r) => !r[2]).map((r) => `${r[0]} (${r[1]})`);
if (down.length) fail(`part of the clustered stack is down: ${down.join(', ')}; run npm run stack:up -- --cluster first`);

// coupon-api processes the proofs start trust the local signing key, as under `npm start`.
const env = await withLocalAuth(process.env);
const started = Date.now();
const result = spawnSync('vitest', ['run', '--config', join(root, 'vitest.cluster.config.ts'), ...process.argv.slice(2)], { cwd: root, stdio: 'inherit', env });
console.log(`[test:cluster] finished in ${Math.round((Date.now() - started) / 1000)} s`);
process.exit(result.status ?? 1);
