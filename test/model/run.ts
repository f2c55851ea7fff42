// `npm run model -- --runs N [--seed S] [--path P]`: the model-based test of test/model/ for as many
// command sequences as you like, against processes it starts itself. A divergence prints fast-check's
// report: the seed, the path and the shrunk command list, to keep as a regression.
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { commandArbs, runCommands, tally } from './commands.ts';
import { startSystem } from './system.ts';

const { values } = parseArgs({ options: {
  runs: { type: 'string', default: '100' }, seed: { type: 'string' }, path: { type: 'string' },
  'max-commands': { type: 'string', default: '25' }, 'lower-case-only': { type: 'boolean', default: false },
} });
const runs = Number(values.runs);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const maxCommands = Number(values['max-commands']);
if (!Number.isSafeInteger(runs) || runs < 1 || !Number.isSafeInteger(seed) || !Number.isSafeInteger(maxCommands)) {
  console.error('usage: npm run model -- [--runs N] [--seed S] [--path P] [--max-commands C] [--lower-case-only]');
  process.exit(2);
}

console.error(`model: ${runs} sequences of up to ${maxCommands} commands, seed ${seed}; starting coupon-api, coupon-issuer and a private Redis…`);
const sys = await startSystem();
// Stopped from outside (kill <pid>): take the processes, the private Redis and the topics down too.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`model: ${signal} after ${done} sequences; stopping`);
    console.log([...tally].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `  ${k}: ${v}`).join('\n'));
    void sys.close().finally(() => process.exit(130));
  });
}
const started = Date.now();
let done = 0;
let failed = false;
try {
  const arbs = commandArbs({ caseVariants: !values['lower-case-only'], faults: true });
  const result = await fc.check(fc.asyncProperty(fc.commands(arbs, { maxCommands, size: 'max' }), async (cmds) => {
    const t0 = Date.now();
    await runCommands(sys, cmds);
    done++;
    if (process.env.MODEL_TRACE) console.error(`model: run ${done} ok in ${Date.now() - t0} ms: ${fc.stringify(cmds)}`);
    if (done % 10 === 0) console.error(`model: ${done} sequences passed, ${((Date.now() - started) / 1_000).toFixed(0)} s`);
  }), { seed, numRuns: runs, ...(values.path ? { path: values.path } : {}), verbose: 1 });
  if (result.failed) {
    failed = true;
    console.log(fc.defaultReportMessage(result));
    console.log(`divergence: ${(result.errorInstance as Error | undefined)?.message ?? String(result.errorInstance)}`);
    // What the processes were doing: a divergence that every shrunk sequence repeats is often a
    // process that stopped working, not the sequence.
    for (const [name, p] of [['coupon-api', sys.api], ['coupon-issuer', sys.issuer]] as const) {
      const state = p.child.exitCode !== null || p.child.signalCode !== null ? `exited (${p.child.signalCode ?? p.child.exitCode})` : 'running';
      console.log(`${name}: ${state}; its last warnings and errors:`);
      for (const line of p.logs.filter((l) => Number(l.level) >= 40).slice(-30)) console.log(`  ${JSON.stringify(line)}`);
    }
  } else {
    console.log(`model: ${result.numRuns} sequences, seed ${seed}: no divergence (${((Date.now() - started) / 1_000).toFixed(0)} s)`);
  }
} catch (err) {
  failed = true;
  console.error((err as Error).stack);
} finally {
  console.log([...tally].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `  ${k}: ${v}`).join('\n'));
  await sys.close();
}
process.exit(failed ? 1 : 0);
