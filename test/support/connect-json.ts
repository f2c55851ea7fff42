// IssueCoupon as a storefront's plain HTTP client sends it: Connect unary with a JSON body (what
// `curl` and most web stacks do), with fetch. Its answers and errors come back in the shapes of the
// @grpc/grpc-js client (src/client/grpc.ts), so a test can send the same call either way and judge
// the answers with the same code. A call that times out is DEADLINE_EXCEEDED, and a connection that
// fails is UNAVAILABLE without a reason, as @grpc/grpc-js reports them.
import * as grpc from '@grpc/grpc-js';
import { fromBinary, fromJson, type JsonValue } from '@bufbuild/protobuf';
import { codeFromString } from '@connectrpc/connect/protocol-connect';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';
import { IssueCouponResponseSchema, type IssueCouponRequest, type IssueCouponResponse } from '../../gen/coupon/v1/coupon_service_pb.js';
import { CouponCallError } from '../../src/client/grpc.ts';

export interface ConnectJsonCoupons {
  issueCoupon(req: Pick<IssueCouponRequest, 'couponId' | 'userId'>, opts?: { timeoutMs?: number }): Promise<IssueCouponResponse>;
}

interface ErrorBody { code?: string; message?: string; details?: { type?: string; value?: string }[] }

export function connectJsonCoupons(baseUrl: string, token: () => Promise<string>): ConnectJsonCoupons {
  return {
    async issueCoupon(req, opts = {}) {
      let res: Response;
      try {
        res = await fetch(`${baseUrl}/coupon.v1.CouponService/IssueCoupon`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${await token()}` },
          body: JSON.stringify({ couponId: req.couponId, userId: req.userId }),
          signal: AbortSignal.timeout(opts.timeoutMs ?? 5_000),
        });
      } catch (err) {
        const timedOut = (err as Error).name === 'TimeoutError';
        throw new CouponCallError(timedOut ? grpc.status.DEADLINE_EXCEEDED : grpc.status.UNAVAILABLE, (err as Error).message, undefined);
      }
      const body = (await res.json().catch(() => ({}))) as JsonValue;
      if (res.status === 200) return fromJson(IssueCouponResponseSchema, body);
      const e = body as ErrorBody;
      const detail = e.details?.find((d) => d.type === ErrorDetailSchema.typeName);
      const code = (e.code && codeFromString(e.code)) || grpc.status.UNKNOWN;
      throw new CouponCallError(code as number, e.message ?? `HTTP ${res.status}`, detail?.value ? fromBinary(ErrorDetailSchema, Buffer.from(detail.value, 'base64')) : undefined);
    },
  };
}
