// coupon-api's first-come gate: what it decided (gate/gate.ts) and how often it rebuilt a coupon from the ledger (gate/rebuild.ts).
import { boundCounter, type BoundCounter } from './bound.ts';
import { counter } from './registry.ts';

/** What the first-come gate decided for an IssueCoupon (docs/architecture.md#issuing). */
export type GateOutcome = 'won' | 'repeat' | 'sold_out' | 'not_open' | 'closed' | 'paused' | 'not_found' | 'publish_failed' | 'unreplicated';
export const GATE_OUTCOMES: readonly GateOutcome[] = ['won', 'repeat', 'sold_out', 'not_open', 'closed', 'paused', 'not_found', 'publish_failed', 'unreplicated'];

export const gateDecisions = counter({ name: 'coupon_gate_decisions_total', help: 'IssueCoupon decisions of the first-come gate, by outcome.', labelNames: ['outcome'] });
// Every outcome exists from the start, so rate() and increase() see the first one.
const decided = Object.fromEntries(GATE_OUTCOMES.map((outcome) => [outcome, boundCounter(gateDecisions, { outcome })])) as Record<GateOutcome, BoundCounter>;

const REFUSALS: Record<string, GateOutcome> = { NOT_FOUND: 'not_found', NOT_OPEN: 'not_open', CLOSED: 'closed', SOLD_OUT: 'sold_out', PAUSED: 'paused' };

/** Counts a refusal by the reserve script's status; the other statuses are counted where they are decided. */
export function countGateRefusal(status: string): void {
  const outcome = REFUSALS[status];
  if (outcome) decided[outcome].inc();
}

export function countGateDecision(outcome: GateOutcome): void { decided[outcome].inc(); }

export const gateRebuilds = counter({ name: 'coupon_gate_rebuilds_total', help: "Coupons whose gate state was rebuilt from the ledger after Redis lost it." });

export const gateLocalAnswers = counter({
  name: 'coupon_gate_local_answers_total',
  help: 'IssueCoupon refusals answered from the in-process sold-out view, without Redis (also counted in coupon_gate_decisions_total), by outcome.',
  labelNames: ['outcome'],
});
const answeredLocally = { SOLD_OUT: boundCounter(gateLocalAnswers, { outcome: 'sold_out' }), CLOSED: boundCounter(gateLocalAnswers, { outcome: 'closed' }) };

/** One refusal answered in process (gate/sold-out-view.ts). */
export function countLocalAnswer(status: 'SOLD_OUT' | 'CLOSED'): void {
  answeredLocally[status].inc();
  decided[REFUSALS[status]!].inc();
}
