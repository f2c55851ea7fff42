// Runs before `npm start` and `npm test` on whatever node is on PATH (a fresh clone has only the
// system node), so it uses nothing but node's standard library and, alone in scripts/, is plain
// JavaScript: that node may be too old to run TypeScript. It installs dependencies when
// node_modules is missing or older than package-lock.json; everything after it runs on the pinned
// Node 24 from node_modules/.bin.
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const marker = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');

const stale = !existsSync(marker) || statSync(marker).mtimeMs < statSync(lock).mtimeMs;
if (stale) {
  console.log('[setup] installing dependencies with npm ci …');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
}
