// Helpers to create coupons and call the API through a real @grpc/grpc-js client.
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { createGrpcClient, CouponCallError, type GrpcClient } from '../../src/client/grpc.ts';

export type CouponClient = GrpcClient<typeof CouponService>;

export const couponClient = (address: string, separateConnection = false): CouponClient =>
  createGrpcClient(CouponService, address, separateConnection ? { channelOptions: { 'grpc.use_local_subchannel_pool': 1 } } : {});

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
