// Prometheus and promtool for the alert rules' tests (`promtool test rules`) and for
// `npm run stack:up -- --with-prometheus`. Both come from Debian's `prometheus` package, installed
// with apt-get when missing (as root, non-interactively; `apt-get update` first only if the package
// lists do not know it yet).
//
//   npm run promtool -- [promtool arguments…]   # installs if needed, then runs promtool
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { aptInstall, onPath } from './debian-tools.ts';

const log = (msg: string): void => console.error(`[promtool] ${msg}`);

/** Paths of promtool and prometheus, installing Debian's `prometheus` package if either is missing. */
export function ensurePrometheusTools(): { promtool: string; prometheus: string } {
  let promtool = onPath('promtool');
  let prometheus = onPath('prometheus');
  if (promtool && prometheus) return { promtool, prometheus };
  // policy-rc.d (in containers) or the missing runlevel keeps the package's own service from
  // starting; our Prometheus is started by scripts/stack.ts with the project's config.
  aptInstall(['prometheus'], 'promtool and prometheus');
  promtool = onPath('promtool');
  prometheus = onPath('prometheus');
  if (!promtool || !prometheus) throw new Error("Debian's prometheus package is installed but promtool or prometheus is still missing");
  return { promtool, prometheus };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const { promtool } = ensurePrometheusTools();
    const args = process.argv.slice(2);
    if (args.length > 0) process.exitCode = spawnSync(promtool, args, { stdio: 'inherit' }).status ?? 1;
    else console.log(promtool);
  } catch (err) {
    log((err as Error).message);
    process.exitCode = 1;
  }
}
