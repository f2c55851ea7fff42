// `npm test`: the same set-up as `npm start` (stack up; migrations run in vitest's global setup),
// then the whole vitest suite, then the cluster proof (test-cluster/, on the clustered
// local stack, which it starts if needed and stops again if it started it). Extra arguments go to
// vitest and run only what they name, without the cluster proof: `npm test -- test/gate`.
// TEST_CLUSTER=0 skips the cluster proof.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { up } from './stack.ts';
import { clusterDown, clusterPresent, clusterUp } from './cluster-stack.ts';
import { withLocalAuth } from './local-auth.ts';
import { ensurePrometheusTools } from './promtool.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);

// The pure tests first: a broken rule fails in seconds, before any stack starts.
if (args.length === 0) {
  const unit = spawnSync('vitest', ['run', '--config', 'vitest.unit.config.ts'], { stdio: 'inherit', shell: false, env: process.env });
  if (unit.status !== 0) process.exit(unit.status ?? 1);
}

try {
  await up();
} catch (err) {
  console.error(`[test] ${(err as Error).message}`);
  process.exit(1);
}
// The alert rules' tests run promtool (test/ops/alert-rules.test.ts); without it they fail and say why.
try {
  ensurePrometheusTools();
} catch (err) {
  console.error(`[test] ${(err as Error).message}`);
}
// coupon-api processes the tests start trust the local signing key, as under `npm start`.
const env = await withLocalAuth(process.env);
const result = spawnSync('vitest', ['run', ...args], { stdio: 'inherit', shell: false, env });
if (result.status !== 0 || args.length > 0 || process.env.TEST_CLUSTER === '0') process.exit(result.status ?? 1);

// The cluster proof: about a minute on top of the stack's start.
const startedHere = !clusterPresent();
let status = 1;
try {
  console.log('[test] the cluster proof (npm run test:cluster) on the clustered local stack …');
  await clusterUp();
  status = spawnSync(process.execPath, [join(root, 'scripts', 'test-cluster.ts')], { stdio: 'inherit', env }).status ?? 1;
} catch (err) {
  console.error(`[test] ${(err as Error).message}`);
} finally {
  if (startedHere) await clusterDown().catch((err: unknown) => console.error(`[test] stopping the clustered stack: ${(err as Error).message}`));
}
process.exit(status);
