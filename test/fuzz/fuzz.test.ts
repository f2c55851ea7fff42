// A bounded run of the fuzz campaign (fuzz/campaign.ts) as part of the normal suite: at least 2,000
// generated calls across every CouponService RPC and every protocol. Longer runs:
// `npm run fuzz -- --runs N`.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { WIRES, wireName } from '../support/wire.ts';
import { formatReport, runCampaign, startTarget, type Target } from '../../fuzz/campaign.ts';

const RUNS = 2_000;
let target: Target;

beforeAll(async () => { target = await startTarget(); });
afterAll(async () => { await target?.close(); });

it(`${RUNS} generated calls: never INTERNAL or UNKNOWN, every error with an ErrorDetail, refusals write nothing, the server stays SERVING`, { timeout: 120_000 }, async () => {
  // No shrinking here: a call that hangs would cost its timeout for every shrink step. The report
  // gives the seed; `npm run fuzz -- --runs N --seed S` replays it and shrinks.
  const report = await runCampaign(target, { runs: RUNS, endOnFailure: true });
  console.log(formatReport(report));
  expect(report.calls).toBeGreaterThanOrEqual(RUNS);
  // Every RPC was called over every wire.
  for (const method of CouponService.methods) {
    expect([...(report.outcomes.get(method.name)?.keys() ?? [])].sort()).toEqual(WIRES.map(wireName).sort());
  }
});
