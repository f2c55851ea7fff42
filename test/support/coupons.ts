// Helpers to create coupons and call the API through a real @grpc/grpc-js client.
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { createGrpcClient, CouponCallError, type GrpcClient } from '../../src/client/grpc.ts';
import { tokenFor, type Role } from './auth.ts';

export type CouponClient = GrpcClient<typeof CouponService>;

/** A CouponService client acting as `roles` (an operator unless told otherwise). */
export const couponClient = (address: string, separateConnection = false, roles: Role[] = ['operator']): CouponClient =>
  createGrpcClient(CouponService, address, {
    ...(separateConnection ? { channelOptions: { 'grpc.use_local_subchannel_pool': 1 } } : {}),
    token: () => tokenFor(...roles),
  });

export async function createCoupon(client: CouponClient, total: number, opts: { opensInMs?: number; closesInMs?: number; validForMs?: number; name?: string } = {}) {
  const now = Date.now();
  const res = await client.createCoupon({
    name: opts.name ?? `test coupon ${total}`,
    totalQuantity: BigInt(total),
    opensAt: timestampFromDate(new Date(now + (opts.opensInMs ?? -1_000))),
    closesAt: opts.closesInMs === undefined ? undefined : timestampFromDate(new Date(now + opts.closesInMs)),
    validUntil: opts.validForMs === undefined ? undefined : timestampFromDate(new Date(now + opts.validForMs)),
  });
  return res.coupon!;
}

/** The call's error, or fails the test when it succeeded. */
export async function callError(p: Promise<unknown>): Promise<CouponCallError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CouponCallError) return err;
    throw err;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/**
 * Calls until the answer is a decision: UNAVAILABLE (BACKEND_UNAVAILABLE or PUBLISH_FAILED, both
 * "nothing confirmed, retry") is retried, as a caller does. For steps of a test that inject no
 * fault, where a loaded machine can still make a publish miss its PUBLISH_TIMEOUT_MS.
 */
export async function decided<T>(call: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      const retry = err instanceof CouponCallError && (err.reason === 'BACKEND_UNAVAILABLE' || err.reason === 'PUBLISH_FAILED');
      if (!retry || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/**
 * Calls until the answer is not UNAVAILABLE BACKEND_UNAVAILABLE: after Redis lost (or expired) a
 * coupon's state, the first calls wait for the rebuild (PUBLISH_TIMEOUT_MS + 2 s at least).
 */
export async function afterRebuild<T>(call: () => Promise<T>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      const waiting = err instanceof CouponCallError && err.reason === 'BACKEND_UNAVAILABLE';
      if (!waiting || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
