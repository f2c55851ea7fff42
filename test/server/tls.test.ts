// TLS and mutual TLS on the API port: HTTP/2 and HTTP/1.1 chosen by ALPN, and with
// a client CA, a caller without a certificate it signed is refused at the handshake.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/health/v1/health_pb.js';
import { createGrpcClient } from '../../src/client/grpc.ts';
import { authHeader, tokenFor } from '../support/auth.ts';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { uniqueEnv } from '../support/stack.ts';

const dir = mkdtempSync(join(tmpdir(), 'coupon-tls-'));
const file = (name: string) => join(dir, name);
const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

/** A CA, and a certificate it signs for `cn` (with 127.0.0.1 as a SAN for servers). */
function makeCa(name: string) {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-out', file(`${name}.crt`), '-days', '2', '-subj', `/CN=${name}`);
}
function makeCert(name: string, ca: string, server: boolean) {
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=${name}`);
  writeFileSync(file(`${name}.ext`), server ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' : 'extendedKeyUsage=clientAuth\n');
  openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file(`${ca}.crt`), '-CAkey', file(`${ca}.key`), '-CAcreateserial', '-out', file(`${name}.crt`), '-days', '2', '-extfile', file(`${name}.ext`));
}
const pem = (name: string) => readFileSync(file(name));

beforeAll(() => {
  makeCa('ca');
  makeCa('other-ca');
  makeCert('server', 'ca', true);
  makeCert('client', 'ca', false);
  makeCert('stranger', 'other-ca', false);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Connect JSON over HTTP/1.1 + TLS (ALPN http/1.1). */
async function connectJson(port: number, path: string, body: unknown, client?: { key: Buffer; cert: Buffer }) {
  const headers = { 'content-type': 'application/json', ...(await authHeader('operator')) };
  return new Promise<{ status: number; alpn: string | false | null; body: Record<string, unknown> }>((resolve, reject) => {
    const options: https.RequestOptions & { ALPNProtocols: string[] } = { host: '127.0.0.1', port, path, method: 'POST', headers, ca: pem('ca.crt'), ALPNProtocols: ['http/1.1'], agent: false, ...client };
    const req = https.request(options, (res) => {
      const alpn = (res.socket as TLSSocket).alpnProtocol;
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, alpn, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const grpcOver = (port: number, creds: grpc.ChannelCredentials) => ({
  health: createGrpcClient(Health, `127.0.0.1:${port}`, { credentials: creds }),
  coupons: createGrpcClient(CouponService, `127.0.0.1:${port}`, { credentials: creds, token: () => tokenFor('operator') }),
});

describe('TLS', () => {
  let api: ServiceProcess;
  beforeAll(async () => {
    api = await startService('api', { ...uniqueEnv('tls'), API_TLS_CERT: file('server.crt'), API_TLS_KEY: file('server.key') });
  });
  afterAll(() => api.stop());

  it('serves gRPC over HTTP/2 and Connect JSON over HTTP/1.1 on the one port, chosen by ALPN', async () => {
    const port = Number(api.address.split(':')[1]);
    const c = grpcOver(port, grpc.credentials.createSsl(pem('ca.crt')));
    try {
      expect((await c.health.check({ service: '' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      const created = await c.coupons.createCoupon({ name: 'tls coupon', totalQuantity: 3n });
      expect((await c.coupons.issueCoupon({ couponId: created.coupon!.id, userId: 'tls-user' })).seq).toBe(1n);
      const read = await connectJson(port, '/coupon.v1.CouponService/GetCoupon', { couponId: created.coupon!.id });
      expect(read).toMatchObject({ status: 200, alpn: 'http/1.1' });
      expect((read.body.coupon as { acceptedCount: string }).acceptedCount).toBe('1');
    } finally { c.health.close(); c.coupons.close(); }
  });

  it('does not answer cleartext on a TLS port', async () => {
    const port = Number(api.address.split(':')[1]);
    const plain = createGrpcClient(Health, `127.0.0.1:${port}`);
    await expect(plain.check({ service: '' }, { timeoutMs: 3_000 })).rejects.toMatchObject({ code: expect.any(Number) as number });
    plain.close();
    expect(api.child.exitCode).toBeNull();
  });
});

describe('mutual TLS', () => {
  let api: ServiceProcess;
  beforeAll(async () => {
    api = await startService('api', { ...uniqueEnv('mtls'), API_TLS_CERT: file('server.crt'), API_TLS_KEY: file('server.key'), API_TLS_CLIENT_CA: file('ca.crt') });
  });
  afterAll(() => api.stop());

  it('serves a caller whose certificate the client CA signed', async () => {
    const port = Number(api.address.split(':')[1]);
    const c = grpcOver(port, grpc.credentials.createSsl(pem('ca.crt'), pem('client.key'), pem('client.crt')));
    try {
      expect((await c.health.check({ service: '' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
      expect((await connectJson(port, '/grpc.health.v1.Health/Check', {}, { key: pem('client.key'), cert: pem('client.crt') })).body).toEqual({ status: 'SERVING' });
    } finally { c.health.close(); c.coupons.close(); }
  });

  it('refuses a caller without a certificate, or with one another CA signed', async () => {
    const port = Number(api.address.split(':')[1]);
    for (const creds of [grpc.credentials.createSsl(pem('ca.crt')), grpc.credentials.createSsl(pem('ca.crt'), pem('stranger.key'), pem('stranger.crt'))]) {
      const { health, coupons } = grpcOver(port, creds);
      await expect(health.check({ service: '' }, { timeoutMs: 3_000 })).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      health.close(); coupons.close();
    }
    await expect(connectJson(port, '/grpc.health.v1.Health/Check', {})).rejects.toThrow();
    await expect(connectJson(port, '/grpc.health.v1.Health/Check', {}, { key: pem('stranger.key'), cert: pem('stranger.crt') })).rejects.toThrow();
    expect(api.child.exitCode).toBeNull();
  });
});
