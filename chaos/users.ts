// The buyers: each user calls IssueCoupon through @grpc/grpc-js as a real client would, retrying
// UNAVAILABLE and DEADLINE_EXCEEDED (IssueCoupon is idempotent per user: a winner asking again
// learns their seq), and COUPON_PAUSED (retry after ResumeCoupon, docs/api.md), until it gets an
// answer or gives up. Every seq a user was told with OK is recorded, and every OK with when its call
// was sent and answered; those are the promises I3 and the pause checks hold the service to.
import * as grpc from '@grpc/grpc-js';
import { CouponService } from '../gen/coupon/v1/coupon_service_pb.js';
import { localToken } from '../scripts/local-auth.ts';
import { CouponCallError, createGrpcClient, type GrpcClient } from '../src/client/grpc.ts';
import { sleep } from './journal.ts';

export type CouponClient = GrpcClient<typeof CouponService>;

/** Channel settings for a client that must find coupon-api again quickly after it restarts. */
export const reconnectQuickly: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 200,
  'grpc.max_reconnect_backoff_ms': 1_000,
  'grpc.use_local_subchannel_pool': 1,
};

// The chaos run's clients act as an operator (they create the coupon and read it), with a token
// signed by the local key coupon-api trusts. Signed at the first call, after run.ts made sure of the
// key (withLocalAuth): signing at import raced it on a first run, each creating a key pair, and
// coupon-api could trust the other one.
let operatorToken: Promise<string> | undefined;
export const couponClient = (address: string): CouponClient => createGrpcClient(CouponService, address, {
  channelOptions: reconnectQuickly,
  token: () => (operatorToken ??= localToken({ roles: ['operator'], sub: 'chaos' })),
});

export type AskResult = 'OK' | 'SOLD_OUT' | 'GAVE_UP' | 'REFUSED';

export interface UserRecord {
  userId: string;
  /** Every distinct seq the user was told with OK, in the order heard. */
  toldSeqs: number[];
  /** Seconds into the run when each seq was first heard. */
  toldAt: number[];
  calls: number;
  last: string;
}

/** One OK answer: whom, which seq, when its call was sent and when the answer came (epoch ms). */
export interface HeardOk { userId: string; seq: number; sentMs: number; heardMs: number }

export const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);
const paused = (err: CouponCallError) => err.code === grpc.status.FAILED_PRECONDITION && err.reason === 'COUPON_PAUSED';

export class Buyers {
  readonly records = new Map<string, UserRecord>();
  /** Answers by "<code>/<reason>", over every call. */
  readonly answers = new Map<string, number>();
  /** Every OK, in the order heard. */
  readonly oks: HeardOk[] = [];
  private readonly clients: CouponClient[];
  private readonly couponId: string;
  private readonly now: () => number;
  private next = 0;

  constructor(clients: CouponClient[], couponId: string, now: () => number) {
    this.clients = clients;
    this.couponId = couponId;
    this.now = now;
  }

  private record(userId: string): UserRecord {
    let rec = this.records.get(userId);
    if (!rec) {
      rec = { userId, toldSeqs: [], toldAt: [], calls: 0, last: '' };
      this.records.set(userId, rec);
    }
    return rec;
  }

  private count(answer: string): void {
    this.answers.set(answer, (this.answers.get(answer) ?? 0) + 1);
  }

  /**
   * Asks until an answer that is not "try again", or until `giveUpMs` have passed. COUPON_PAUSED is
   * "try again" too, unless `retryPaused` is false (a winner asking again must never hear it).
   */
  async ask(userId: string, giveUpMs: number, retryPaused = true): Promise<AskResult> {
    const rec = this.record(userId);
    const deadline = Date.now() + giveUpMs;
    let delayMs = 200;
    for (;;) {
      rec.calls++;
      const client = this.clients[this.next++ % this.clients.length]!;
      const sentMs = Date.now();
      try {
        const res = await client.issueCoupon({ couponId: this.couponId, userId }, { timeoutMs: 10_000 });
        const seq = Number(res.seq);
        this.oks.push({ userId, seq, sentMs, heardMs: Date.now() });
        if (!rec.toldSeqs.includes(seq)) { rec.toldSeqs.push(seq); rec.toldAt.push(this.now()); }
        rec.last = 'OK';
        this.count('OK');
        return 'OK';
      } catch (err) {
        if (!(err instanceof CouponCallError)) throw err;
        const answer = `${grpc.status[err.code]}/${err.reason || '-'}`;
        rec.last = answer;
        this.count(answer);
        if (RETRYABLE.has(err.code) || (retryPaused && paused(err))) {
          if (Date.now() >= deadline) return 'GAVE_UP';
          await sleep(delayMs * (0.5 + Math.random()));
          delayMs = Math.min(2_000, delayMs * 2);
          continue;
        }
        return err.code === grpc.status.RESOURCE_EXHAUSTED ? 'SOLD_OUT' : 'REFUSED';
      }
    }
  }

  /** Users who heard OK at least once. */
  winners(): UserRecord[] {
    return [...this.records.values()].filter((r) => r.toldSeqs.length > 0);
  }

  /** Users who asked and never heard OK. */
  losers(): string[] {
    return [...this.records.values()].filter((r) => r.toldSeqs.length === 0).map((r) => r.userId);
  }
}

/** Runs `work` over `items` with at most `width` at a time. */
export async function inPool<T, R>(items: readonly T[], width: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]!);
    }
  }));
  return results;
}
