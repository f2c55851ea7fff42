// Who may call what: a bearer JWT verified against the JWKS, with issuer and
// audience checked, and the roles each RPC's allowed_roles option lists. Through @grpc/grpc-js and
// through buf curl, as the payment service and an operator would call.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { generateKeyPair, SignJWT } from 'jose';
import { fromBinary } from '@bufbuild/protobuf';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { ErrorDetailSchema } from '../../gen/coupon/v1/error_pb.js';
import { CouponStatus } from '../../gen/coupon/v1/coupon_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/health/v1/health_pb.js';
import { createGrpcClient } from '../../src/client/grpc.ts';
import { localToken } from '../../scripts/local-auth.ts';
import { tokenFor } from '../support/auth.ts';
import { bufBin, run, startService, type ServiceProcess } from '../support/processes.ts';
import { callError, couponClient, createCoupon, type CouponClient } from '../support/coupons.ts';
import { db as newDb, uniqueEnv } from '../support/stack.ts';
import { scrape, sumOf } from '../../src/metrics/text-format.ts';

const db = newDb();
let api: ServiceProcess;
let operator: CouponClient;
beforeAll(async () => {
  api = await startService('api', uniqueEnv('auth'));
  operator = couponClient(api.address);
});
afterAll(async () => { operator.close(); await api.stop(); await db.destroy(); });

const clientWith = (token: () => string | Promise<string>) => createGrpcClient(CouponService, api.address, { token });
/** The code and ErrorDetail reason buf curl prints for a failed call (details come base64-encoded). */
const curlError = (stderr: string) => {
  const printed = JSON.parse(stderr) as { code: string; details?: { type: string; value: string }[] };
  const detail = printed.details?.find((d) => d.type === 'coupon.v1.ErrorDetail');
  return { code: printed.code, reason: detail ? fromBinary(ErrorDetailSchema, Buffer.from(detail.value, 'base64')).reason : '' };
};
const refusal = async (p: Promise<unknown>) => { const e = await callError(p); return { code: e.code, reason: e.reason }; };

describe('authentication', () => {
  it('refuses a call without a token, with an expired token, one signed by another key, or for another audience or issuer: UNAUTHENTICATED', async () => {
    const coupon = await createCoupon(operator, 5);
    const noToken = createGrpcClient(CouponService, api.address);
    expect(await refusal(noToken.issueCoupon({ couponId: coupon.id, userId: 'u' }))).toEqual({ code: grpc.status.UNAUTHENTICATED, reason: 'TOKEN_MISSING' });
    noToken.close();

    const expired = await localToken({ roles: ['operator'], ttlSeconds: -60 });
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT({ roles: ['operator'] }).setProtectedHeader({ alg: 'ES256', kid: 'attacker' }).setSubject('mallory')
      .setIssuer('coupon-local').setAudience('coupon-api').setIssuedAt().setExpirationTime('1h').sign(privateKey);
    const otherAudience = await localToken({ roles: ['operator'], audience: 'some-other-service' });
    const otherIssuer = await localToken({ roles: ['operator'], issuer: 'someone-else' });
    const cases: [string, string][] = [[expired, 'TOKEN_EXPIRED'], [forged, 'TOKEN_INVALID'], [otherAudience, 'TOKEN_INVALID'], [otherIssuer, 'TOKEN_INVALID'], ['not-a-jwt', 'TOKEN_INVALID']];
    for (const [token, reason] of cases) {
      const c = clientWith(() => token);
      expect(await refusal(c.issueCoupon({ couponId: coupon.id, userId: 'u' }))).toEqual({ code: grpc.status.UNAUTHENTICATED, reason });
      c.close();
    }
    // Nothing was issued by any of them.
    expect((await operator.getCoupon({ couponId: coupon.id })).coupon!.acceptedCount).toBe(0n);
    // The refusal names who the token claims to be.
    expect(api.logs.some((l) => l.msg === 'call refused: bad bearer token' && l.claimedSub === 'mallory')).toBe(true);
  });

  it('leaves health and reflection open, as probes and grpcurl need', async () => {
    const health = createGrpcClient(Health, api.address);
    expect((await health.check({ service: '' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    health.close();
    const listed = await run(bufBin, ['curl', '--http2-prior-knowledge', '--list-methods', api.url]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('coupon.v1.CouponService/IssueCoupon');
  });
});

describe('roles', () => {
  it('lets each role call exactly the RPCs its allowed_roles lists, and refuses the rest with PERMISSION_DENIED', async () => {
    const coupon = await createCoupon(operator, 5);
    const storefront = couponClient(api.address, false, ['storefront']);
    const payment = couponClient(api.address, false, ['payment']);
    const nobody = clientWith(() => localToken({ roles: [] }));
    try {
      const denied = { code: grpc.status.PERMISSION_DENIED, reason: 'ROLE_NOT_ALLOWED' };
      // storefront: issuing and reading.
      expect((await storefront.issueCoupon({ couponId: coupon.id, userId: 'shopper' })).seq).toBe(1n);
      expect((await storefront.getCoupon({ couponId: coupon.id })).coupon!.id).toBe(coupon.id);
      expect((await storefront.getUserCoupon({ couponId: coupon.id, userId: 'shopper' })).userCoupon!.seq).toBe(1n);
      expect((await storefront.listUserCoupons({ userId: 'shopper' })).userCoupons).toBeDefined();
      // ListCoupons: open coupons only (test/server/list-coupons.test.ts has the rest).
      expect((await storefront.listCoupons({ status: CouponStatus.OPEN })).coupons).toBeDefined();
      expect(await refusal(storefront.listCoupons({}))).toEqual(denied);
      expect(await refusal(storefront.createCoupon({ name: 'x', totalQuantity: 1n }))).toEqual(denied);
      expect(await refusal(storefront.redeemCoupon({ couponId: coupon.id, userId: 'shopper', orderId: 'o' }))).toEqual(denied);
      expect(await refusal(storefront.cancelRedemption({ couponId: coupon.id, userId: 'shopper', orderId: 'o' }))).toEqual(denied);
      // payment: redeeming, cancelling and reading.
      expect(await refusal(payment.issueCoupon({ couponId: coupon.id, userId: 'p' }))).toEqual(denied);
      expect(await refusal(payment.createCoupon({ name: 'x', totalQuantity: 1n }))).toEqual(denied);
      expect(await refusal(payment.listUserCoupons({ userId: 'shopper' }))).toEqual(denied);
      expect(await refusal(payment.listCoupons({ status: CouponStatus.OPEN }))).toEqual(denied);
      expect((await payment.getCoupon({ couponId: coupon.id })).coupon!.id).toBe(coupon.id);
      expect((await payment.getUserCoupon({ couponId: coupon.id, userId: 'shopper' })).userCoupon!.seq).toBe(1n);
      expect(await refusal(payment.cancelRedemption({ couponId: '00000000-0000-4000-8000-000000000000', userId: 'shopper', orderId: 'o' }))).toEqual({ code: grpc.status.NOT_FOUND, reason: 'COUPON_NOT_FOUND' });
      // No role at all.
      expect(await refusal(nobody.getCoupon({ couponId: coupon.id }))).toEqual(denied);
      // The refused issue took no slot; the refusal is logged with the caller.
      expect((await operator.getCoupon({ couponId: coupon.id })).coupon!.acceptedCount).toBe(1n);
      expect(api.logs.some((l) => l.msg === 'call refused: role not allowed' && l.sub === 'test-payment' && l.procedure === 'IssueCoupon')).toBe(true);
      // An IssueCoupon is counted by caller, never logged per call.
      expect(sumOf(await scrape(api.metricsUrl, 10_000), 'coupon_issue_calls_total', { caller: 'test-storefront' })).toBeGreaterThanOrEqual(1);
      expect(api.logs.filter((l) => l.procedure === 'IssueCoupon' && l.level === 30)).toEqual([]);
      // Creating a coupon leaves an audit line: who, and which coupon (in its canonical spelling).
      expect(api.logs.filter((l) => l.msg === 'audit' && l.procedure === 'CreateCoupon' && l.coupon_id === coupon.id)).toMatchObject([{ sub: 'test-operator', total_quantity: '5' }]);
    } finally {
      storefront.close(); payment.close(); nobody.close();
    }
  });

  it('refuses through buf curl the same way, and accepts the token `npm run -s token` prints', async () => {
    const coupon = await createCoupon(operator, 5);
    const body = JSON.stringify({ couponId: coupon.id, userId: 'curl-user' });
    const url = `${api.url}/coupon.v1.CouponService/IssueCoupon`;
    const bare = await run(bufBin, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-d', body, url]);
    expect(bare.code).not.toBe(0);
    expect(curlError(bare.stderr)).toEqual({ code: 'unauthenticated', reason: 'TOKEN_MISSING' });
    const payment = await run(bufBin, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-H', `Authorization: Bearer ${await tokenFor('payment')}`, '-d', body, url]);
    expect(curlError(payment.stderr)).toEqual({ code: 'permission_denied', reason: 'ROLE_NOT_ALLOWED' });

    const printed = await run('npm', ['run', '-s', 'token', '--', 'storefront']);
    expect(printed.code).toBe(0);
    const token = printed.stdout.trim();
    expect(token.split('.')).toHaveLength(3);
    const ok = await run(bufBin, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-H', `Authorization: Bearer ${token}`, '-d', body, url]);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ seq: '1' });
  });
});

describe('turning it off', () => {
  it('is refused at start unless coupon-api binds a loopback address', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/api.ts'], { AUTH_MODE: 'off', API_HOST: '0.0.0.0' });
    expect(code).toBe(2);
    expect(stderr).toContain('AUTH_MODE=off is allowed only when coupon-api binds a loopback address');
  });

  it('needs a JWKS when on', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/api.ts'], { AUTH_JWKS_FILE: '', AUTH_JWKS_URL: '' });
    expect(code).toBe(2);
    expect(stderr).toContain('AUTH_JWKS_URL or AUTH_JWKS_FILE');
  });
});

