// Hostile connections (docs/design.md#fault-model): resets at any moment, slowloris, idle sockets, HTTP/2
// rapid reset, garbage. None may crash coupon-api or starve other callers. Each test checks that a
// well-behaved caller is served while the hostile one is at work, and that the process is alive after.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { create, toBinary } from '@bufbuild/protobuf';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/health/v1/health_pb.js';
import { ServerReflectionRequestSchema } from '../../gen/grpc/reflection/v1/reflection_pb.js';
import { createGrpcClient } from '../../src/client/grpc.ts';
import { topicNames } from '../../src/events/topics.ts';
import { run, startService, type ServiceProcess } from '../support/processes.ts';
import { config, kafka, uniqueEnv } from '../support/stack.ts';
import { RawHttp2Client } from '../support/raw-http2.ts';

// Short limits, so each hostile client is cut off within seconds.
const limits = {
  API_FIRST_BYTE_TIMEOUT_MS: '1000',
  API_HEADERS_TIMEOUT_MS: '2000',
  API_REQUEST_TIMEOUT_MS: '4000',
  API_IDLE_TIMEOUT_MS: '1500',
  API_MAX_CONCURRENT_STREAMS: '50',
  API_MAX_CONNECTIONS: '30',
  // One process: API_MAX_CONNECTIONS and the other limits are per worker, and these tests count them exactly.
  API_WORKERS: '1',
};
const env = { ...uniqueEnv('conn'), ...limits };

let api: ServiceProcess;
let port: number;
beforeAll(async () => {
  api = await startService('api', env);
  port = Number(new URL(api.url).port);
});
afterAll(async () => {
  await api?.kill();
  // The topics and subjects this file's coupon-api created under its own prefix.
  const topics = Object.values(topicNames(env.KAFKA_TOPIC_PREFIX));
  const admin = kafka().admin();
  await admin.connect();
  await admin.deleteTopics({ topics }).catch(() => undefined).finally(() => admin.disconnect());
  for (const topic of topics) {
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value`, { method: 'DELETE' });
    await fetch(`${config.SCHEMA_REGISTRY_URL}/subjects/${topic}-value?permanent=true`, { method: 'DELETE' });
  }
});

/** Health Check as Connect JSON over a fresh HTTP/1.1 connection; the status name. */
async function checkOverHttp1(): Promise<string> {
  const body = await new Promise<string>((resolve, reject) => {
    const req = http.request(`${api.url}/grpc.health.v1.Health/Check`, {
      method: 'POST', agent: false, headers: { 'content-type': 'application/json' }, timeout: 5_000,
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { text += d; });
      res.on('end', () => resolve(text));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 5 s')));
    req.on('error', reject);
    req.end('{}');
  });
  return (JSON.parse(body) as { status: string }).status;
}

/** Health Check over gRPC (@grpc/grpc-js, HTTP/2, its own channel). */
async function checkOverGrpc(): Promise<HealthCheckResponse_ServingStatus> {
  const health = createGrpcClient(Health, api.address);
  try { return (await health.check({ service: '' }, { timeoutMs: 5_000 })).status; } finally { health.close(); }
}

/**
 * A well-behaved caller is answered within 5 s, over both HTTP versions. NOT_SERVING counts as an
 * answer: it says a dependency was slow to answer a probe on a loaded machine, not that coupon-api was.
 */
async function othersAreServed(): Promise<void> {
  expect(['SERVING', 'NOT_SERVING']).toContain(await checkOverHttp1());
  expect([HealthCheckResponse_ServingStatus.SERVING, HealthCheckResponse_ServingStatus.NOT_SERVING]).toContain(await checkOverGrpc());
}

/** The process did not die (give a late error a moment to surface) and still answers. */
async function expectStillServing(): Promise<void> {
  await sleep(300);
  expect(api.child.exitCode, 'coupon-api exited').toBeNull();
  expect(api.child.signalCode).toBeNull();
  await othersAreServed();
}

async function connect(): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1', timeout: 3_000 });
  socket.on('error', () => { /* hostile clients get hung up on */ });
  socket.once('timeout', () => socket.destroy(new Error('connect timed out')));
  try {
    await once(socket, 'connect');
  } catch (err) {
    throw new Error(`cannot connect to coupon-api (exit code ${api.child.exitCode}, signal ${api.child.signalCode})`, { cause: err });
  }
  socket.setTimeout(0);
  return socket;
}

/** Resolves once `socket` is closed, whoever closed it and whether or not with an error. */
function closeOf(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => { if (socket.closed) resolve(); else socket.once('close', () => resolve()); });
}

/** `promise`, or a rejection with `message` if it has not settled within `limitMs`. */
async function within<T>(promise: Promise<T>, limitMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(message)), limitMs); });
  try { return await Promise.race([promise, timeout]); } finally { clearTimeout(timer); }
}

/** Milliseconds until the server closes `socket`, or a rejection after `limitMs`. */
async function closedWithin(socket: net.Socket, limitMs: number, what: string): Promise<number> {
  const started = Date.now();
  await within(closeOf(socket), limitMs, `${what}: still open after ${limitMs} ms`);
  return Date.now() - started;
}

/** Everything the server wrote to `socket` until now. */
function received(socket: net.Socket): () => string {
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => { text += d; });
  return () => text;
}

/** A node:http2 session over a socket the test holds, so the test can reset the TCP connection itself. */
async function http2Over(socket: net.Socket, settings: http2.Settings = {}): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(api.url, { createConnection: () => socket, settings });
  session.on('error', () => { /* the reset below is ours */ });
  await once(session, 'remoteSettings');
  return session;
}

const grpcFrame = (message: Uint8Array) => {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
};

describe('coupon-api under hostile connections', () => {
  it('survives connections reset before their first byte, inside the HTTP/2 preface and inside HTTP/1.1 headers', async () => {
    const resetAfter = async (bytes: string) => {
      const socket = await connect();
      if (bytes) { socket.write(bytes); await sleep(20); }
      socket.resetAndDestroy();
      await closeOf(socket);
    };
    for (let i = 0; i < 10; i++) await resetAfter('');
    await Promise.all(Array.from({ length: 10 }, () => resetAfter('')));
    await resetAfter('PRI * HTT');
    await resetAfter('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    await resetAfter('POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Ty');
    await expectStillServing();
  });

  it('closes a connection that sends nothing after the first-byte timeout, and one that stops inside the HTTP/2 preface', async () => {
    const silent = await connect();
    const partialPreface = await connect();
    partialPreface.write('PRI * HTTP/2.0\r\n');
    await othersAreServed();
    const [silentMs, prefaceMs] = await Promise.all([
      closedWithin(silent, 6_000, 'a silent connection'),
      closedWithin(partialPreface, 6_000, 'a connection stuck inside the preface'),
    ]);
    expect(silentMs).toBeGreaterThan(500);
    expect(prefaceMs).toBeGreaterThan(500);
    await expectStillServing();
  });

  it('answers 408 and closes a slowloris HTTP/1.1 connection (one header byte a second) after the headers timeout', async () => {
    const socket = await connect();
    const answer = received(socket);
    const started = Date.now();
    socket.write('GET /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const drip = setInterval(() => { if (!socket.destroyed) socket.write('a'); }, 1_000);
    try {
      await sleep(1_000);
      await othersAreServed();
      await closedWithin(socket, 8_000, 'a slowloris connection');
      // Past the first-byte timeout (1 s), so it was the headers timeout (2 s) that ended it.
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
      expect(answer()).toMatch(/^HTTP\/1\.1 408 /);
    } finally { clearInterval(drip); }
    await expectStillServing();
  });

  it('closes a slow HTTP/1.1 request body after the request timeout', async () => {
    const socket = await connect();
    const answer = received(socket);
    socket.write('POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
    const drip = setInterval(() => { if (!socket.destroyed) socket.write(' '); }, 1_000);
    try {
      await othersAreServed();
      await closedWithin(socket, 10_000, 'a slow request body');
      expect(answer()).toMatch(/^HTTP\/1\.1 408 /);
    } finally { clearInterval(drip); }
    await expectStillServing();
  });

  it('closes an idle HTTP/1.1 keep-alive connection after the idle timeout', async () => {
    const socket = await connect();
    const answer = received(socket);
    socket.write('POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}');
    while (!answer().includes('SERVING')) await sleep(20);
    const ms = await closedWithin(socket, 6_000, 'an idle keep-alive connection');
    expect(ms).toBeGreaterThan(1_000);
    await expectStillServing();
  });

  it('sends GOAWAY to an HTTP/2 session without streams after the idle timeout, even if it keeps pinging', async () => {
    const client = await RawHttp2Client.connect(port);
    client.call();
    const pinging = setInterval(() => client.ping(), 300);
    try {
      const started = Date.now();
      await Promise.race([client.closed, sleep(6_000)]);
      expect(client.isClosed, 'an idle HTTP/2 session is still open after 6 s').toBe(true);
      expect(Date.now() - started).toBeGreaterThan(1_000);
      expect(client.goaway?.errorCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    } finally { clearInterval(pinging); }
    await expectStillServing();
  });

  it('keeps an HTTP/2 session with an open Health Watch past the idle timeout, and ends it once the watch is over', async () => {
    const session = http2.connect(api.url);
    session.on('error', () => undefined);
    const ended = new Promise<void>((resolve) => { session.once('goaway', () => resolve()); session.once('close', () => resolve()); });
    const watch = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Watch', 'content-type': 'application/grpc', te: 'trailers' });
    watch.on('error', () => undefined);
    watch.end(grpcFrame(new Uint8Array()));
    await once(watch, 'data');
    await sleep(4_000);
    expect(session.closed || session.destroyed, 'the session was closed under an open watch').toBe(false);
    expect(watch.closed, 'the watch was cut').toBe(false);
    watch.close(http2.constants.NGHTTP2_CANCEL);
    const started = Date.now();
    await within(ended, 6_000, 'the session outlived its last stream by 6 s');
    expect(Date.now() - started).toBeGreaterThan(1_000);
    session.destroy();
    await expectStillServing();
  });

  it('advertises the concurrent stream limit to HTTP/2 clients', async () => {
    const session = http2.connect(api.url);
    session.on('error', () => undefined);
    try {
      await once(session, 'remoteSettings');
      expect(session.remoteSettings.maxConcurrentStreams).toBe(Number(limits.API_MAX_CONCURRENT_STREAMS));
    } finally { session.destroy(); }
  });

  it('ends an HTTP/2 session that opens and cancels streams in a loop (rapid reset), serving others meanwhile', async () => {
    const session = http2.connect(api.url);
    session.on('error', () => undefined);
    await once(session, 'connect');
    let ended = false;
    session.once('goaway', () => { ended = true; });
    session.once('close', () => { ended = true; });
    let opened = 0;
    const others = sleep(100).then(othersAreServed);
    others.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
    const headers = { ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' };
    while (!ended && opened < 50_000) {
      for (let i = 0; i < 50 && !ended; i++) {
        try {
          const req = session.request(headers);
          req.on('error', () => undefined);
          req.close(http2.constants.NGHTTP2_CANCEL);
          opened++;
        } catch { ended = true; }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await others;
    expect(ended, `the session was still open after ${opened} cancelled streams`).toBe(true);
    session.destroy();
    await expectStillServing();
  });

  it('closes the connection of a rapid-reset client that ignores GOAWAY', async () => {
    const client = await RawHttp2Client.connect(port);
    let sent = 0;
    const others = sleep(100).then(othersAreServed);
    others.catch(() => undefined); // awaited below; this only keeps an early failure from counting as unhandled
    const started = Date.now();
    while (!client.isClosed && sent < 200_000 && Date.now() - started < 15_000) {
      const burst: Buffer[] = [];
      for (let i = 0; i < 100; i++) burst.push(client.openAndCancel());
      sent += 100;
      await client.write(Buffer.concat(burst));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await Promise.race([client.closed, sleep(10_000)]);
    await others;
    expect(client.isClosed, `the connection was still open after ${sent} cancelled streams`).toBe(true);
    // The server stopped taking this client's streams after at most about a reset burst (1000). Its
    // GOAWAY says where; when the server hangs up with this client's frames still unread, the kernel
    // answers with a TCP reset that can overtake the GOAWAY, and then the closed connection is the
    // whole evidence (seen on a loaded CI machine).
    if (client.goaway) expect(client.goaway.lastStreamId).toBeLessThan(2 * 1_100);
    await expectStillServing();
  });

  it('survives a client that resets its connection in the middle of a request body (HTTP/1.1 and HTTP/2)', async () => {
    const h1 = await connect();
    h1.write('POST /coupon.v1.CouponService/GetCoupon HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{"couponId":"');
    await sleep(100);
    h1.resetAndDestroy();

    const socket = await connect();
    const session = await http2Over(socket);
    const call = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
    call.on('error', () => undefined);
    const head = Buffer.alloc(5);
    head.writeUInt32BE(1_000, 1);
    call.write(Buffer.concat([head, Buffer.alloc(10)]));
    await sleep(100);
    socket.resetAndDestroy();
    await expectStillServing();
  });

  it('survives a client that resets its connection in the middle of a response (HTTP/1.1 stream, HTTP/2 reflection)', async () => {
    // HTTP/1.1: a Connect server-streaming Health Watch, reset after its first message.
    const h1 = await connect();
    const answer = received(h1);
    const envelope = grpcFrame(Buffer.from('{}'));
    h1.write(`POST /grpc.health.v1.Health/Watch HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\nContent-Length: ${envelope.length}\r\n\r\n`);
    h1.write(envelope);
    while (!answer().includes('SERVING')) await sleep(20);
    h1.resetAndDestroy();

    // HTTP/2: a reflection answer the client gives no flow-control window for, so the server is stuck
    // in the middle of writing it when the connection goes.
    const socket = await connect();
    const session = await http2Over(socket, { initialWindowSize: 0 });
    const call = session.request({ ':method': 'POST', ':path': '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', 'content-type': 'application/grpc', te: 'trailers' });
    call.on('error', () => undefined);
    const request = create(ServerReflectionRequestSchema, { messageRequest: { case: 'fileContainingSymbol', value: 'coupon.v1.CouponService' } });
    call.end(grpcFrame(toBinary(ServerReflectionRequestSchema, request)));
    await Promise.race([once(call, 'response').catch(() => undefined), sleep(2_000)]);
    await sleep(200);
    socket.resetAndDestroy();
    await expectStillServing();
  });

  it('answers garbage on HTTP/1.1 with 400 and ends an HTTP/2 session that sends garbage frames', async () => {
    const h1 = await connect();
    const answer = received(h1);
    h1.write('\x16\x03\x01\x00\xa5garbage\r\n\r\n');
    await closedWithin(h1, 5_000, 'a garbage HTTP/1.1 connection');
    expect(answer()).toMatch(/^HTTP\/1\.1 400 /);

    const client = await RawHttp2Client.connect(port);
    // DATA on stream 0 is a connection error; what follows is not a frame at all.
    await client.write(Buffer.from('\x00\x00\x04\x00\x00\x00\x00\x00\x00junkgarbage, not a frame', 'latin1'));
    await Promise.race([client.closed, sleep(5_000)]);
    expect(client.isClosed, 'a session sending garbage frames is still open').toBe(true);
    await expectStillServing();
  });

  it('refuses connections beyond API_MAX_CONNECTIONS and serves again once they are gone', async () => {
    const max = Number(limits.API_MAX_CONNECTIONS);
    const sockets = await Promise.all(Array.from({ length: max + 10 }, () => connect()));
    await sleep(300); // well inside the first-byte timeout: only refused connections are closed by now
    const refused = sockets.filter((s) => s.destroyed || s.readableEnded).length;
    expect(refused).toBeGreaterThanOrEqual(10);
    expect(sockets.length - refused).toBeLessThanOrEqual(max);
    for (const s of sockets) s.destroy();
    await sleep(200);
    await expectStillServing();
  });

  it('still drains and exits 0 on SIGTERM afterwards', async () => {
    const session = http2.connect(api.url);
    session.on('error', () => undefined);
    await once(session, 'connect');
    const idle = await connect();
    expect(await api.stop('SIGTERM')).toBe(0);
    expect(api.logs.map((l) => l.msg)).toContain('shut down cleanly');
    session.destroy();
    idle.destroy();
  });
});

describe('coupon-api connection settings', () => {
  it('refuses to start with a headers timeout longer than the request timeout, naming both', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/api.ts'], { API_HEADERS_TIMEOUT_MS: '20000', API_REQUEST_TIMEOUT_MS: '10000' });
    expect(code).toBe(2);
    expect(stderr).toContain('API_HEADERS_TIMEOUT_MS="20000"');
    expect(stderr).toContain('API_REQUEST_TIMEOUT_MS');
  });

  it('refuses a connection limit that is not a positive number', async () => {
    const { code, stderr } = await run(process.execPath, ['src/bin/api.ts'], { API_MAX_CONNECTIONS: '0', API_IDLE_TIMEOUT_MS: 'soon' });
    expect(code).toBe(2);
    expect(stderr).toContain('API_MAX_CONNECTIONS="0"');
    expect(stderr).toContain('API_IDLE_TIMEOUT_MS="soon"');
  });
});
