// The foundation as a caller sees it: health over gRPC, reflection through buf curl, Connect JSON
// over plain HTTP/1.1, graceful shutdown, and clear configuration errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/health/v1/health_pb.js';
import { createGrpcClient, CouponCallError } from '../../src/client/grpc.ts';
import { authHeader } from '../support/auth.ts';
import { bufBin, run, startService, type ServiceProcess } from '../support/processes.ts';

describe('coupon-api foundation', () => {
  let api: ServiceProcess;
  beforeAll(async () => { api = await startService('api'); });
  afterAll(async () => { await api?.stop(); });

  it('answers SERVING to a grpc-js Health Check, overall and for CouponService', async () => {
    const health = createGrpcClient(Health, api.address);
    try {
      expect((await health.check({ service: '' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      expect((await health.check({ service: 'coupon.v1.CouponService' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      const unknown = await health.check({ service: 'no.such.Service' }).catch((e: unknown) => e);
      expect(unknown).toBeInstanceOf(CouponCallError);
      expect((unknown as CouponCallError).code).toBe(grpc.status.NOT_FOUND);
    } finally { health.close(); }
  });

  it('streams the current status first on a Health Watch (connect-node gRPC client)', async () => {
    const client = createClient(Health, createGrpcTransport({ baseUrl: api.url }));
    const firstStatus = async (service: string) => {
      const abort = new AbortController();
      try {
        for await (const message of client.watch({ service }, { signal: abort.signal, timeoutMs: 5_000 })) return message.status;
        return undefined;
      } finally { abort.abort(); }
    };
    expect(await firstStatus('coupon.v1.CouponService')).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(await firstStatus('no.such.Service')).toBe(HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN);
  });

  it('lists every CouponService method through reflection with buf curl', async () => {
    const { code, stdout, stderr } = await run(bufBin, ['curl', '--http2-prior-knowledge', '--list-methods', api.url]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const methods = stdout.trim().split('\n').filter((l) => l.startsWith('coupon.v1.CouponService/')).sort();
    expect(methods).toEqual([
      'coupon.v1.CouponService/CancelRedemption', 'coupon.v1.CouponService/CloseCoupon', 'coupon.v1.CouponService/CreateCoupon',
      'coupon.v1.CouponService/GetCoupon', 'coupon.v1.CouponService/GetUserCoupon', 'coupon.v1.CouponService/IssueCoupon',
      'coupon.v1.CouponService/ListCoupons', 'coupon.v1.CouponService/ListUserCoupons', 'coupon.v1.CouponService/PauseCoupon',
      'coupon.v1.CouponService/RedeemCoupon', 'coupon.v1.CouponService/ResumeCoupon', 'coupon.v1.CouponService/UpdateCoupon',
    ]);
  });

  it('serves reflection v1alpha too (older grpcurl) and describes a request message', async () => {
    const { code, stdout } = await run(bufBin, ['curl', '--http2-prior-knowledge', '--reflect-protocol', 'grpc-v1alpha', '--list-methods', api.url]);
    expect(code).toBe(0);
    expect(stdout).toContain('coupon.v1.CouponService/IssueCoupon');
  });

  it('health Check works through buf curl over gRPC as the README shows', async () => {
    const { code, stdout } = await run(bufBin, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', `${api.url}/grpc.health.v1.Health/Check`]);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ status: 'SERVING' });
  });

  it('gives a well-formed Connect error over plain HTTP/1.1 JSON for a malformed body', async () => {
    const res = await fetch(`${api.url}/coupon.v1.CouponService/GetCoupon`, {
      method: 'POST', headers: { 'content-type': 'application/json', ...(await authHeader('operator')) }, body: '{"coupon_id": ',
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toContain('application/json');
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe('invalid_argument');
    expect(body.message).toMatch(/json|parse|unexpected/i);
  });

  it('refuses an oversized message with RESOURCE_EXHAUSTED', async () => {
    const res = await fetch(`${api.url}/coupon.v1.CouponService/GetCoupon`, {
      method: 'POST', headers: { 'content-type': 'application/json', ...(await authHeader('operator')) }, body: JSON.stringify({ couponId: 'x'.repeat(200_000) }),
    });
    const body = (await res.json()) as { code: string };
    expect(body.code).toBe('resource_exhausted');
  });
});

describe('coupon-api configuration', () => {
  it('refuses to start on a bad setting and names the variable', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/api.ts'], { API_PORT: 'eighty', KAFKA_BROKERS: 'nohostport' });
    expect(code).toBe(2);
    expect(stderr).toContain('API_PORT="eighty"');
    expect(stderr).toContain('KAFKA_BROKERS="nohostport"');
    expect(stderr).toMatch(/host:port/);
  });

  it('refuses a recovery threshold that is not longer than the publish timeout', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/api.ts'], { RECOVERY_STALE_MS: '1000', PUBLISH_TIMEOUT_MS: '5000' });
    expect(code).toBe(2);
    expect(stderr).toContain('RECOVERY_STALE_MS="1000"');
    expect(stderr).toContain('PUBLISH_TIMEOUT_MS');
  });
});

describe('coupon-api shutdown', () => {
  it('exits 0 on SIGTERM after draining', async () => {
    const api = await startService('api');
    const code = await api.stop('SIGTERM');
    expect(code).toBe(0);
    expect(api.logs.map((l) => l.msg)).toContain('shut down cleanly');
  });
});
