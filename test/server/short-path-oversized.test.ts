// A gRPC request whose body is over API_MAX_MESSAGE_BYTES by more than the HTTP/2 stream window
// (200 KB in 16 KiB writes, then ended) is refused RESOURCE_EXHAUSTED, by connect-es from the first
// bytes the short path read (src/server/short-path.ts); the rest of the request is drained, so once
// the client goes away its stream and connection close. Nothing stays in flight (coupon-api stops at
// once, without waiting out API_SHUTDOWN_GRACE_MS), and with API_MAX_CONNECTIONS at 3 a fourth client
// is still served. The same with the short path off. Real coupon-api, node:http2 clients.
import http2 from 'node:http2';
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { create, toBinary } from '@bufbuild/protobuf';
import { IssueCouponRequestSchema } from '../../gen/coupon/v1/coupon_service_pb.js';
import { startService, type ServiceProcess } from '../support/processes.ts';
import { tokenFor } from '../support/auth.ts';
import { uniqueEnv } from '../support/stack.ts';

const PATH = '/coupon.v1.CouponService/IssueCoupon';
const started: ServiceProcess[] = [];
afterAll(async () => { await Promise.all(started.map((s) => s.kill())); });

/** One call on its own connection; resolves with the grpc-status (or what happened), then drops the connection. */
function callAndLeave(url: string, headers: Record<string, string>, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const client = http2.connect(url);
    client.on('error', (e: Error) => resolve(`session error ${e.message}`));
    const req = client.request({ ':method': 'POST', ':path': PATH, 'content-type': 'application/grpc', ...headers });
    let status: string | undefined;
    // The client leaves once its stream closed (or a second after the answer).
    const leave = (why: string) => { client.destroy(); resolve(status ?? why); };
    req.on('trailers', (t: http2.IncomingHttpHeaders) => { status = `grpc-status ${String(t['grpc-status'])}`; setTimeout(() => leave(''), 1_000).unref(); });
    req.on('error', (e: Error) => leave(`stream error ${e.message}`));
    req.on('close', () => leave(`closed without trailers, rst ${req.rstCode}`));
    req.resume();
    // In 16 KiB writes a millisecond apart, as a client streams a large message.
    void (async () => {
      for (let i = 0; i < body.length; i += 16_384) {
        if (req.destroyed) return;
        req.write(body.subarray(i, i + 16_384));
        await new Promise((r) => setTimeout(r, 1));
      }
      if (!req.destroyed) req.end();
    })();
    setTimeout(() => { client.destroy(); resolve('no answer in 5 s'); }, 5_000).unref();
  });
}

describe('a gRPC body over the message limit', () => {
  it.each(['true', 'false'])('API_SHORT_PATH=%s: leaks no connection after the client left', { timeout: 120_000 }, async (shortPath) => {
    const api = await startService('api', { ...uniqueEnv('grpc-short-leak'), API_WORKERS: '1', API_MAX_CONNECTIONS: '3', API_SHORT_PATH: shortPath });
    started.push(api);
    const auth = { authorization: `Bearer ${await tokenFor('storefront')}` };
    const over = Buffer.alloc(5 + 200_000);
    over.writeUInt32BE(200_000, 1);
    // Three clients each send a 200 KB message, get RESOURCE_EXHAUSTED, and close their connection.
    for (let i = 0; i < 3; i++) expect(await callAndLeave(api.url, auth, over)).toBe('grpc-status 8');
    await new Promise((r) => setTimeout(r, 1_000));
    // A fourth client is served (API_MAX_CONNECTIONS is 3: only live connections count).
    const m = Buffer.from(toBinary(IssueCouponRequestSchema, create(IssueCouponRequestSchema, { couponId: randomUUID(), userId: 'u' })));
    const small = Buffer.concat([Buffer.from([0, 0, 0, 0, m.length]), m]);
    const fourth = await callAndLeave(api.url, auth, small);
    // And the process stops at once: nothing is in flight.
    const t0 = Date.now();
    await api.stop();
    const stopMs = Date.now() - t0;
    const graceOver = api.logs.some((l) => l.msg === 'grace period over; closing remaining connections');
    expect({ fourth, graceOver, stoppedWithin5s: stopMs < 5_000 }).toEqual({ fourth: 'grpc-status 5', graceOver: false, stoppedWithin5s: true });
  });
});
