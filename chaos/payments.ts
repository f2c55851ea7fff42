// The payment service: redeems winners' coupons for orders (RedeemCoupon), and when a payment
// fails compensates either with CancelRedemption or by publishing a PAYMENT_STATUS_FAILED
// PaymentResult on payment.v1.result. A redeem whose outcome is unknown (the call kept failing) is
// compensated blindly with CancelRedemption, as README advises. Every order's story is recorded so
// the end state can be judged against what each order was told (I5).
//
// "Holders" are the orders of a user that were told OK and whose compensation has not started: at
// any moment a user may have at most one. Compensation counts from the moment it starts, because a
// cancel that timed out may still have landed.
import { create } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import type { Producer } from 'kafkajs';
import { PaymentResultSchema, PaymentStatus } from '../gen/payment/v1/payment_pb.js';
import { localToken } from '../scripts/local-auth.ts';
import { createPaymentCoupons, type PaymentCoupons } from '../src/client/payment.ts';
import { CouponCallError } from '../src/client/grpc.ts';
import type { EventCodec } from '../src/events/registry.ts';
import { bounded, sleep } from './journal.ts';
import type { Prng } from './prng.ts';
import { reconnectQuickly } from './users.ts';

// The payment service's token, signed with the local key coupon-api trusts in a chaos run.
// Signed at the first call, not at import (see couponClient in chaos/users.ts).
let paymentTokenOnce: Promise<string> | undefined;
const paymentToken = () => (paymentTokenOnce ??= localToken({ roles: ['payment'], sub: 'chaos-payments' }));

export type Compensation = 'rpc' | 'kafka';

export interface OrderRecord {
  orderId: string;
  userId: string;
  /** What RedeemCoupon answered: ok, refused:<reason>, or unknown (the calls kept failing). */
  redeem: string;
  compensation?: Compensation;
  /** The compensation was answered (cancel OK or a refusal) or acknowledged by Kafka. */
  compensationAnswered: boolean;
  /** CancelRedemption's answer: ok, <refusal reason>, or unknown. */
  cancelAnswer?: string;
}

export interface PaymentResults {
  publishFailed(orderId: string, couponId: string, userId: string): Promise<void>;
}

/** Publishes PaymentResult events the way the payment service would, registry-encoded. */
export class PaymentResultPublisher implements PaymentResults {
  private readonly makeProducer: () => Producer;
  private producer: Producer | undefined;
  private readonly codec: EventCodec<typeof PaymentResultSchema>;
  private readonly topic: string;
  private failuresInARow = 0;

  constructor(makeProducer: () => Producer, codec: EventCodec<typeof PaymentResultSchema>, topic: string) {
    this.makeProducer = makeProducer;
    this.codec = codec;
    this.topic = topic;
  }

  async publishFailed(orderId: string, couponId: string, userId: string): Promise<void> {
    try {
      if (!this.producer) {
        this.producer = this.makeProducer();
        await bounded('connecting the payment producer', 8_000, this.producer.connect());
      }
      const value = this.codec.encode(create(PaymentResultSchema, { orderId, status: PaymentStatus.FAILED, coupons: [{ couponId, userId }], occurredAt: timestampNow() }));
      await bounded('publishing a PaymentResult', 8_000, this.producer.send({ topic: this.topic, acks: -1, timeout: 5_000, messages: [{ key: orderId, value }] }));
      this.failuresInARow = 0;
    } catch (err) {
      // A producer that keeps failing after an outage is replaced, as a service would restart it.
      if (++this.failuresInARow >= 3) await this.reset();
      throw err;
    }
  }

  private async reset(): Promise<void> {
    const old = this.producer;
    this.producer = undefined;
    this.failuresInARow = 0;
    await bounded('disconnecting the payment producer', 5_000, old?.disconnect() ?? Promise.resolve()).catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.reset();
  }
}

export class PaymentService {
  readonly orders = new Map<string, OrderRecord>();
  readonly violations: string[] = [];
  /** Answers by call and outcome, for the summary. */
  readonly answers = new Map<string, number>();
  private readonly holders = new Map<string, Set<string>>();
  private readonly busy = new Set<string>();
  private readonly coupons: PaymentCoupons;
  private readonly couponId: string;
  private readonly results: PaymentResults;
  private readonly rng: Prng;
  private readonly runId: string;
  private orderCount = 0;

  constructor(o: { address: string; couponId: string; results: PaymentResults; rng: Prng; runId: string }) {
    this.coupons = createPaymentCoupons(o.address, { attempts: 6, timeoutMs: 4_000, backoffMs: 250, channelOptions: reconnectQuickly, token: paymentToken });
    this.couponId = o.couponId;
    this.results = o.results;
    this.rng = o.rng;
    this.runId = o.runId;
  }

  private count(what: string): void {
    this.answers.set(what, (this.answers.get(what) ?? 0) + 1);
  }

  private heldBy(userId: string): Set<string> {
    let set = this.holders.get(userId);
    if (!set) { set = new Set(); this.holders.set(userId, set); }
    return set;
  }

  /** The order each user's coupon must be redeemed by now (told OK, never compensated), if any. */
  keptOrders(): Map<string, string[]> {
    return new Map([...this.holders].filter(([, set]) => set.size > 0).map(([user, set]) => [user, [...set]]));
  }

  /**
   * Starts payment flows until `untilMs` (Date.now() based), at most `width` at a time, each for a
   * winner no other flow is working on. A user whose coupon is kept by an order is picked rarely:
   * such a flow checks that a second order is refused.
   */
  async run(untilMs: number, winners: () => string[], width = 6): Promise<void> {
    const flows = new Set<Promise<void>>();
    while (Date.now() < untilMs) {
      await sleep(this.rng.between(100, 400));
      if (flows.size >= width) continue;
      const candidates = winners().filter((u) => !this.busy.has(u) && (this.heldBy(u).size === 0 || this.rng.chance(0.15)));
      if (candidates.length === 0) continue;
      const userId = this.rng.pick(candidates);
      const flow = this.flow(userId, this.rng.fork(`flow-${this.orderCount}`)).finally(() => flows.delete(flow));
      flows.add(flow);
    }
    await Promise.all(flows);
  }

  private newOrder(userId: string): OrderRecord {
    const rec: OrderRecord = { orderId: `${this.runId}-order-${++this.orderCount}`, userId, redeem: 'pending', compensationAnswered: false };
    this.orders.set(rec.orderId, rec);
    return rec;
  }

  private async flow(userId: string, rng: Prng): Promise<void> {
    this.busy.add(userId);
    try {
      // Sometimes two checkouts race for the same coupon: at most one may be told OK.
      const orders = rng.chance(0.15) ? [this.newOrder(userId), this.newOrder(userId)] : [this.newOrder(userId)];
      await Promise.all(orders.map((o) => this.redeem(o)));
      for (const order of orders) {
        if (order.redeem === 'unknown') {
          await this.compensate(order, 'rpc');
        } else if (order.redeem === 'ok') {
          const fate = rng.weighted({ keep: 3, rpc: 4, kafka: 3 });
          if (fate !== 'keep') await this.compensate(order, fate);
        }
        // A late or repeated checkout of an order whose cancel was acknowledged must be refused.
        if (order.compensation === 'rpc' && order.cancelAnswer === 'ok' && rng.chance(0.3)) {
          await this.redeemAgain(order, 'late-redeem');
        }
      }
    } finally {
      this.busy.delete(userId);
    }
  }

  private async redeem(order: OrderRecord): Promise<void> {
    try {
      const r = await this.coupons.redeem({ couponId: this.couponId, userId: order.userId }, order.orderId);
      if (r.ok) {
        const others = [...this.heldBy(order.userId)].filter((o) => o !== order.orderId);
        if (others.length > 0) this.violations.push(`I5:${order.userId}:${order.orderId}-told-OK-while-${others.join('+')}-held-the-coupon`);
        if (r.userCoupon.orderId !== order.orderId) this.violations.push(`I5:${order.userId}:${order.orderId}-told-OK-but-bound-to-${r.userCoupon.orderId || 'none'}`);
        this.heldBy(order.userId).add(order.orderId);
        order.redeem = 'ok';
      } else {
        order.redeem = `refused:${r.reason}`;
      }
    } catch (err) {
      if (!(err instanceof CouponCallError)) throw err;
      order.redeem = 'unknown';
    }
    this.count(`redeem ${order.redeem}`);
  }

  /** Starts (or retries) an order's compensation; true once it was answered or acknowledged. */
  private async compensate(order: OrderRecord, how: Compensation): Promise<boolean> {
    order.compensation ??= how;
    this.heldBy(order.userId).delete(order.orderId);
    if (order.compensation === 'kafka') {
      try {
        await this.results.publishFailed(order.orderId, this.couponId, order.userId);
        order.compensationAnswered = true;
      } catch { /* retried by finish() */ }
      this.count(`kafka FAILED ${order.compensationAnswered ? 'acked' : 'not acked'}`);
      return order.compensationAnswered;
    }
    try {
      const r = await this.coupons.cancel({ couponId: this.couponId, userId: order.userId }, order.orderId);
      order.cancelAnswer = r.ok ? 'ok' : r.reason;
      order.compensationAnswered = true;
      // The order was told OK and nothing else was told OK since: it must still hold the coupon.
      if (!r.ok && r.reason === 'ORDER_MISMATCH' && order.redeem === 'ok') {
        this.violations.push(`I5:${order.userId}:cancel-of-${order.orderId}-(told-OK)-answered-ORDER_MISMATCH`);
      }
    } catch (err) {
      if (!(err instanceof CouponCallError)) throw err;
      order.cancelAnswer = 'unknown';
    }
    this.count(`cancel ${order.cancelAnswer}`);
    return order.compensationAnswered;
  }

  private async redeemAgain(order: OrderRecord, why: string): Promise<void> {
    try {
      const r = await this.coupons.redeem({ couponId: this.couponId, userId: order.userId }, order.orderId);
      this.count(`${why} ${r.ok ? 'ok' : r.reason}`);
      if (r.ok) this.violations.push(`I5:${order.userId}:${order.orderId}-redeemed-after-its-compensation-by-${order.compensation}-was-acked(${why})`);
    } catch (err) {
      if (!(err instanceof CouponCallError)) throw err;
      this.count(`${why} unknown`);
    }
  }

  /** After the faults: every compensation that was never answered is retried until it is (bounded). */
  async finish(ms: number): Promise<OrderRecord[]> {
    const deadline = Date.now() + ms;
    let open = [...this.orders.values()].filter((o) => o.compensation && !o.compensationAnswered);
    while (open.length > 0 && Date.now() < deadline) {
      for (const order of open) await this.compensate(order, order.compensation!);
      open = open.filter((o) => !o.compensationAnswered);
      if (open.length > 0) await sleep(1_000);
    }
    return open;
  }

  /**
   * After the checks: every order whose compensation was acknowledged tries to redeem once more,
   * as a late duplicate checkout would. Each must be refused.
   */
  async probeCancelledOrders(limit: number): Promise<number> {
    const cancelled = [...this.orders.values()].filter((o) => o.compensationAnswered && (o.compensation === 'kafka' || o.cancelAnswer === 'ok')).slice(0, limit);
    for (const order of cancelled) await this.redeemAgain(order, 'final-probe');
    return cancelled.length;
  }

  /**
   * RedeemCoupon for a user without a coupon: refused, and changes nothing, but coupon-api loads the
   * coupon's redemption state from the ledger first if Redis lost it. Retried while unavailable.
   */
  async touch(userId: string, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        await this.coupons.redeem({ couponId: this.couponId, userId }, `${this.runId}-touch`);
        return true;
      } catch (err) {
        if (!(err instanceof CouponCallError)) throw err;
        if (Date.now() > deadline) return false;
        await sleep(500);
      }
    }
  }

  /** Orders whose compensation was acknowledged as recorded (cancel OK, or the FAILED result acked). */
  acknowledgedCompensations(): OrderRecord[] {
    return [...this.orders.values()].filter((o) => o.compensationAnswered && (o.compensation === 'kafka' ? o.redeem === 'ok' : o.cancelAnswer === 'ok'));
  }

  close(): void {
    this.coupons.close();
  }
}
