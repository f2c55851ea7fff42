// Command-line tools from Debian's packages, installed with apt-get when missing (as root,
// non-interactively; `apt-get update` first only if the package lists do not know the package
// yet). Used by `npm run bench` (wrk, h2load, redis-benchmark) and scripts/promtool.ts.
//
//   npx node scripts/debian-tools.ts <binary> <package>   # installs if needed, prints the path
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const log = (msg: string): void => console.error(`[debian-tools] ${msg}`);

/** The path of `name` on PATH (or in /usr/bin, /usr/local/bin, /usr/sbin), or undefined. */
export function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/local/bin', '/usr/sbin'])) {
    if (dir && existsSync(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return undefined;
}

function aptGet(args: string[]): number | null {
  // policy-rc.d (in containers) or the missing runlevel keeps a package's own service from starting.
  return spawnSync('apt-get', args, {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  }).status;
}

/**
 * Installs Debian packages with apt-get, refreshing the package lists once if the first attempt
 * fails. Throws, naming the command to run, when this process is not root.
 */
export function aptInstall(packages: string[], why = packages.join(', ')): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`${why} missing: install Debian's ${packages.join(' ')} (sudo apt-get install -y ${packages.join(' ')})`);
  }
  log(`installing Debian's ${packages.join(' ')} (${why}) …`);
  const install = ['install', '-y', '--no-install-recommends', '-o', 'Dpkg::Options::=--force-confold', ...packages];
  if (aptGet(install) !== 0) {
    log('apt-get install failed; refreshing the package lists and trying again …');
    if (aptGet(['update']) !== 0 || aptGet(install) !== 0) throw new Error(`could not install Debian's ${packages.join(' ')} with apt-get`);
  }
}

/**
 * The path of `binary`, installing Debian's `pkg` first if it is missing. `how` says which of the
 * two happened ('found' or 'installed'), for reports that say where a tool came from.
 */
export function ensureDebianTool(binary: string, pkg: string): { path: string; how: 'found' | 'installed'; package: string } {
  const found = onPath(binary);
  if (found) return { path: found, how: 'found', package: pkg };
  aptInstall([pkg], binary);
  const installed = onPath(binary);
  if (!installed) throw new Error(`Debian's ${pkg} is installed but ${binary} is still missing`);
  return { path: installed, how: 'installed', package: pkg };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [binary, pkg] = process.argv.slice(2);
  if (!binary || !pkg) {
    log('usage: npx node scripts/debian-tools.ts <binary> <package>');
    process.exitCode = 2;
  } else {
    try {
      console.log(ensureDebianTool(binary, pkg).path);
    } catch (err) {
      log((err as Error).message);
      process.exitCode = 1;
    }
  }
}
