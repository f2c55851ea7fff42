// The model-based test of the whole CouponService (test/model/): a short seeded run of generated
// command sequences against a real coupon-api (two workers, its own Redis, Kafka through a proxy)
// and coupon-issuer, every answer compared with the model after every command. Longer runs:
// `npm run model -- --runs N [--seed S]`.
import { afterAll, beforeAll, expect, it } from 'vitest';
import fc from 'fast-check';
import { commandArbs, runCommands } from './commands.ts';
import { startSystem, type System } from './system.ts';

const SEED = 20_261_206;
const RUNS = 14;
let sys: System;

beforeAll(async () => { sys = await startSystem(); }, 120_000);
afterAll(async () => { await sys?.close(); });

it(`${RUNS} generated sequences of up to 25 commands, faults included, answer as the model says`, { timeout: 240_000 }, async () => {
  // No shrinking here: each step replays real calls and faults. The report gives the seed and the
  // path; `npm run model -- --seed S --path P` shrinks it.
  const result = await fc.check(fc.asyncProperty(fc.commands(commandArbs({ caseVariants: true, faults: true }), { maxCommands: 25, size: 'max' }), (cmds) => runCommands(sys, cmds)),
    { seed: SEED, numRuns: RUNS, endOnFailure: true });
  expect(result.failed ? `${fc.defaultReportMessage(result)}\n${(result.errorInstance as Error | undefined)?.message}` : 'ok').toBe('ok');
});
