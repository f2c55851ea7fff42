// `npm run fuzz -- --runs 20000 [--seed 42]`: the fuzz campaign of fuzz/campaign.ts for as long as
// you like, against the real stack, printing what it tried: calls per RPC × protocol × outcome.
// A violation prints fast-check's report, with the seed and the shrunk call to replay it.
import { parseArgs } from 'node:util';
import { formatReport, runCampaign, startTarget } from './campaign.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10000' }, seed: { type: 'string' } } });
const runs = Number(values.runs);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
if (!Number.isSafeInteger(runs) || runs < 1 || !Number.isSafeInteger(seed)) {
  console.error('usage: npm run fuzz -- [--runs N] [--seed S]');
  process.exit(2);
}

console.error(`fuzz: ${runs} calls, seed ${seed}; starting coupon-api and seeding coupons…`);
const target = await startTarget();
let failed = false;
try {
  const report = await runCampaign(target, {
    runs, seed,
    progress: (r) => { if (r.calls % 1_000 === 0) console.error(`fuzz: ${r.calls} calls, ${(r.elapsedMs / 1_000).toFixed(0)} s`); },
  });
  console.log(formatReport(report));
} catch (err) {
  failed = true;
  console.error((err as Error).message);
} finally {
  await target.close();
}
process.exit(failed ? 1 : 0);
