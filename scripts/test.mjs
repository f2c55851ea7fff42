// `npm test`: the same set-up as `npm start` (stack up; migrations run in vitest's global setup),
// then the whole vitest suite. Extra arguments go to vitest: `npm test -- test/gate`.
import { spawnSync } from 'node:child_process';
import { up } from './stack.mjs';

try {
  await up();
} catch (err) {
  console.error(`[test] ${err.message}`);
  process.exit(1);
}
const result = spawnSync('vitest', ['run', ...process.argv.slice(2)], { stdio: 'inherit', shell: false });
process.exit(result.status ?? 1);
