// The command line over the local stacks: the single-node one (scripts/stack.ts) and the clustered
// one (scripts/cluster-stack.ts). It only reads the command and calls them.
//
//   npm run stack:up [-- --with-prometheus | -- --cluster] | stack:down [-- --cluster] | stack:status
//   (npm runs node scripts/stack-cli.ts up [--with-prometheus | --cluster] | down [--cluster] | status)
//
// `up` is idempotent: parts already running are left alone.
import { down, singleNodeStatus, up } from './stack.ts';
import { clusterDown, clusterPresent, clusterStatusRows, clusterUp } from './cluster-stack.ts';

async function status(): Promise<boolean> {
  const single = await singleNodeStatus();
  // The clustered stack is listed while it is meant to run (started, not stopped by down --cluster).
  if (!clusterPresent()) {
    console.log('cluster    off  (npm run stack:up -- --cluster)');
    return single;
  }
  console.log('cluster (registry shared):');
  const rows = await clusterStatusRows();
  for (const [name, where, isUp, detail] of rows) console.log(`  ${name.padEnd(11)} ${isUp ? 'up  ' : 'DOWN'} ${where.padEnd(16)} ${detail}`);
  return single && rows.every((r) => r[2]);
}

const cmd = process.argv[2];
const cluster = process.argv.includes('--cluster');
try {
  if (cmd === 'up' && cluster) await clusterUp();
  else if (cmd === 'up') await up({ withPrometheus: process.argv.includes('--with-prometheus') });
  else if (cmd === 'down' && cluster) await clusterDown();
  else if (cmd === 'down') await down();
  else if (cmd === 'status') process.exitCode = (await status()) ? 0 : 1;
  else { console.error('usage: node scripts/stack-cli.ts up [--with-prometheus | --cluster] | down [--cluster] | status'); process.exitCode = 2; }
} catch (err) {
  console.error(`[stack] ${(err as Error).message}`);
  process.exitCode = 1;
}
