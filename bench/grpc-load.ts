// The gRPC load generator of `npm run bench`: its own process, started by bench/gate.ts as
//   node bench/grpc-load.ts '<json LoadSpec>'
// It opens `connections` h2c sessions (HTTP/2 prior knowledge) with one call in flight on each, so
// `connections` calls are in flight at once, as with h2load -c N -m 1. Call i (0 ≤ i < requests)
// is for user i mod users, so with requests > users the users repeat. Every body is encoded before
// the clock starts (toBinary plus the 5-byte gRPC frame header). h2load cannot send a different
// body per request, which the gate needs (one user per request); this is why it is not used here.
//
// Output: a JSON progress line on stdout every 250 ms ({"done": n}), a final summary line
// ({"summary": …}), and the per-call log in `logFile`: "<start µs since the epoch> <latency µs>
// <class> <seq>" per line, class a (OK), s (RESOURCE_EXHAUSTED: sold out) or e (anything else).
import http2 from 'node:http2';
import { writeFileSync } from 'node:fs';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { IssueCouponRequestSchema, IssueCouponResponseSchema } from '../gen/coupon/v1/coupon_service_pb.js';
import type { LoadSpec as GateLoadSpec } from './load.ts';

/** What bench/load.ts passes (as JSON in argv): its own spec's call fields, and where to log. */
export type LoadSpec = Pick<GateLoadSpec, 'url' | 'kind' | 'couponId' | 'token' | 'userPrefix' | 'users' | 'requests' | 'connections'> & {
  logFile: string;
  /** A call not answered within this counts as an error (timeout). */
  timeoutMs: number;
};

const frame = (message: Uint8Array) => {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
};

async function main(spec: LoadSpec) {
  const path = spec.kind === 'issue' ? '/coupon.v1.CouponService/IssueCoupon' : '/grpc.health.v1.Health/Check';
  const bodies: Buffer[] = spec.kind === 'issue'
    ? Array.from({ length: spec.users }, (_, u) => frame(toBinary(IssueCouponRequestSchema, create(IssueCouponRequestSchema, { couponId: spec.couponId, userId: `${spec.userPrefix}${u}` }))))
    : [frame(new Uint8Array(0))];
  const headers: http2.OutgoingHttpHeaders = {
    ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers',
    ...(spec.kind === 'issue' ? { authorization: `Bearer ${spec.token}` } : {}),
  };
  const sessions = await Promise.all(Array.from({ length: spec.connections }, () => new Promise<http2.ClientHttp2Session>((resolve, reject) => {
    const s = http2.connect(spec.url);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  })));

  const log: string[] = [];
  let next = 0;
  let done = 0;
  const counts = { a: 0, s: 0, e: 0 };
  const errors: Record<string, number> = {};
  const originUs = performance.timeOrigin * 1000;

  const call = (session: http2.ClientHttp2Session, body: Buffer) => new Promise<void>((resolve) => {
    const t0 = performance.now();
    let status: string | undefined;
    const chunks: Buffer[] = [];
    const stream = session.request(headers);
    stream.setTimeout(spec.timeoutMs, () => stream.close(http2.constants.NGHTTP2_CANCEL));
    stream.on('response', (h) => { if (h['grpc-status'] !== undefined) status = String(h['grpc-status']); });
    stream.on('trailers', (h: http2.IncomingHttpHeaders) => { if (h['grpc-status'] !== undefined) status = String(h['grpc-status']); });
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('error', () => { /* counted below: no grpc-status */ });
    stream.on('close', () => {
      const t1 = performance.now();
      let cls: 'a' | 's' | 'e' = status === '0' ? 'a' : status === '8' ? 's' : 'e';
      let seq = '-';
      if (cls === 'a' && spec.kind === 'issue') {
        try {
          seq = String(fromBinary(IssueCouponResponseSchema, Buffer.concat(chunks).subarray(5)).seq);
        } catch { cls = 'e'; }
      }
      if (cls === 'e') errors[status ?? 'no grpc-status'] = (errors[status ?? 'no grpc-status'] ?? 0) + 1;
      counts[cls]++;
      done++;
      log.push(`${Math.round(originUs + t0 * 1000)} ${Math.round((t1 - t0) * 1000)} ${cls} ${seq}`);
      resolve();
    });
    stream.end(body);
  });

  const progress = setInterval(() => process.stdout.write(`${JSON.stringify({ done })}\n`), 250);
  const startedMs = Date.now();
  await Promise.all(sessions.map(async (session) => {
    for (;;) {
      const i = next++;
      if (i >= spec.requests) break;
      await call(session, bodies[i % bodies.length]!);
    }
  }));
  const endedMs = Date.now();
  clearInterval(progress);
  for (const s of sessions) s.close();
  writeFileSync(spec.logFile, `${log.join('\n')}\n`);
  process.stdout.write(`${JSON.stringify({ summary: { done, counts, errors, startedMs, endedMs } })}\n`);
}

await main(JSON.parse(process.argv[2] ?? '{}') as LoadSpec);
