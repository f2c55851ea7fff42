// The load generators, each its own process, all logging every call the same way
// ("<start µs since the epoch> <latency µs> <class> <detail>"):
//   connect-h1  wrk (Debian's wrk, C + LuaJIT) with bench/wrk-load.lua: Connect JSON over HTTP/1.1,
//               one user per call (call i is for user i mod U), one connection per wrk thread;
//   grpc-h2c    h2load (Debian's nghttp2-client, C): gRPC over h2c with prior knowledge. h2load sends
//               one fixed body per process, so the bench runs P processes (P = min(32, C, U)), each
//               with its own user's body and C/P connections: P distinct users, every later call
//               of a user a repeat (OK with the seq it won). h2load does not read gRPC trailers, so
//               the answers' gRPC codes come from coupon-api's grpc_server_handled_total.
//   grpc-node   bench/grpc-load.ts (node:http2, one user per call like wrk), when --grpc-client node:
//               the gate's real mix over gRPC, at the price of a generator that needs about three
//               times h2load's CPU per call.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { IssueCouponRequestSchema } from '../gen/coupon/v1/coupon_service_pb.js';
import { ensureDebianTool } from '../scripts/debian-tools.ts';
import { reapedChildrenSeconds } from './cpu.ts';

export type Protocol = 'connect-h1' | 'grpc-h2c';
export type GrpcClient = 'h2load' | 'node';

export interface Call { startUs: number; latencyUs: number; cls: 'a' | 's' | 'e' | '?'; detail: string }

export interface LoadSpec {
  url: string;
  protocol: Protocol;
  grpcClient: GrpcClient;
  kind: 'issue' | 'noop';
  couponId: string;
  token: string;
  userPrefix: string;
  users: number;
  requests: number;
  connections: number;
  durationCapS: number;
  /** Where the generator's files go (call log, bodies). */
  dir: string;
  /** Called with the generator's pids once they run (for CPU sampling). */
  onStart?: (pids: number[]) => void;
}

export interface LoadRun {
  generator: string;
  /** The generator's command line(s), shortened. */
  command: string;
  /** Where the tool came from. */
  tool: string;
  /** Distinct users the calls were for. */
  users: number;
  calls: Call[];
  firstStartMs: number;
  lastEndMs: number;
  /** CPU seconds the generator process(es) used, start to exit. */
  cpuSeconds: number;
  /** Errors the generator itself saw (connect, read, timeouts …), by kind. */
  generatorErrors: Record<string, number>;
  /** True when the duration cap stopped it before every call was answered. */
  capped: boolean;
  note: string;
}

const tools = new Map<string, { path: string; how: string; package: string }>();
function tool(binary: string, pkg: string) {
  let t = tools.get(binary);
  if (!t) { t = ensureDebianTool(binary, pkg); tools.set(binary, t); }
  return t;
}
export const toolNote = (binary: string, pkg: string) => {
  const t = tool(binary, pkg);
  return `${t.path} (Debian's ${t.package}, ${t.how === 'found' ? 'found installed' : 'installed by the bench with apt-get'})`;
};

function parseLog(text: string): Call[] {
  const calls: Call[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [s, l, c, d] = line.split(' ');
    calls.push({ startUs: Number(s), latencyUs: Number(l), cls: (c ?? 'e') as Call['cls'], detail: d ?? '' });
  }
  return calls;
}

function summarize(calls: Call[]) {
  let first = Infinity; let last = 0;
  for (const c of calls) { first = Math.min(first, c.startUs); last = Math.max(last, c.startUs + c.latencyUs); }
  return { firstStartMs: calls.length ? first / 1000 : 0, lastEndMs: calls.length ? last / 1000 : 0 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const exitOf = (child: ChildProcess) => (child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, 'exit').then(() => undefined));

async function runWrk(spec: LoadSpec): Promise<LoadRun> {
  const wrk = tool('wrk', 'wrk');
  const threads = Math.min(spec.connections, spec.requests);
  const doneFile = join(spec.dir, 'wrk-done.txt');
  const logFile = join(spec.dir, 'calls.log');
  writeFileSync(doneFile, '');
  const script = join(import.meta.dirname, 'wrk-load.lua');
  const args = [`-t${threads}`, `-c${threads}`, `-d${spec.durationCapS}s`, '-T5s', '-s', script, spec.url];
  const cpu0 = reapedChildrenSeconds();
  const child = spawn(wrk.path, args, {
    env: {
      ...process.env,
      BENCH_KIND: spec.kind,
      BENCH_PATH: spec.kind === 'issue' ? '/coupon.v1.CouponService/IssueCoupon' : '/grpc.health.v1.Health/Check',
      BENCH_COUPON: spec.couponId, BENCH_TOKEN: spec.token, BENCH_USER_PREFIX: spec.userPrefix,
      BENCH_USERS: String(spec.users), BENCH_REQUESTS: String(spec.requests), BENCH_THREADS: String(threads),
      BENCH_DONE_FILE: doneFile, BENCH_LOG_FILE: logFile,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stdout += d.toString(); });
  spec.onStart?.([child.pid!]);
  const exited = exitOf(child);
  let finished = false;
  let capped = true;
  void exited.then(() => { finished = true; });
  while (!finished) {
    const lines = readFileSync(doneFile, 'utf8').split('\n').filter(Boolean).length;
    if (lines >= threads) { capped = false; child.kill('SIGINT'); break; }
    await sleep(50);
  }
  await exited;
  const summaryLine = /BENCH-WRK (\{.*\})/.exec(stdout)?.[1];
  if (!summaryLine) throw new Error(`wrk gave no summary (exit ${child.exitCode}):\n${stdout.slice(-2000)}`);
  const summary = JSON.parse(summaryLine) as { errors: Record<string, number> };
  const calls = existsSync(logFile) ? parseLog(readFileSync(logFile, 'utf8')) : [];
  // status: non-2xx answers (sold out is 429), classified per call instead. timeout: wrk counts a
  // connection whose call is older than -T at each 2-second check, and the call still completes
  // (its latency is in the log), so it is no lost call either. connect, read, write: lost calls.
  const generatorErrors = Object.fromEntries(Object.entries(summary.errors).filter(([k, v]) => v > 0 && k !== 'status' && k !== 'timeout'));
  return {
    generator: 'wrk', command: `wrk ${args.join(' ').replace(script, 'bench/wrk-load.lua')}`, tool: toolNote('wrk', 'wrk'),
    users: distinctUsers(spec), calls, ...summarize(calls), cpuSeconds: reapedChildrenSeconds() - cpu0,
    generatorErrors, capped,
    note: `wrk, ${threads} threads with one connection each; call i for user i mod ${spec.users}; latency per call from the Lua hooks (FFI clock_gettime)`,
  };
}

/** h2load processes of a gRPC run: one body, so one user, each. */
const h2loadProcs = (s: { connections: number; users: number; requests: number; kind: 'issue' | 'noop' }) => Math.max(1, Math.min(32, s.connections, s.kind === 'issue' ? s.users : 32, s.requests));

/** The distinct users a run's calls are for. */
export function distinctUsers(s: { protocol: Protocol; grpcClient: GrpcClient; kind: 'issue' | 'noop'; users: number; requests: number; connections: number }): number {
  if (s.kind === 'noop') return 0;
  return s.protocol === 'grpc-h2c' && s.grpcClient === 'h2load' ? h2loadProcs(s) : Math.min(s.users, s.requests);
}

const grpcFrame = (message: Uint8Array) => {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
};

async function runH2load(spec: LoadSpec): Promise<LoadRun> {
  const h2load = tool('h2load', 'nghttp2-client');
  const procs = h2loadProcs(spec);
  const path = spec.kind === 'issue' ? '/coupon.v1.CouponService/IssueCoupon' : '/grpc.health.v1.Health/Check';
  const share = (total: number, i: number) => Math.floor(total / procs) + (i < total % procs ? 1 : 0);
  const cpu0 = reapedChildrenSeconds();
  const children: ChildProcess[] = [];
  const outputs: string[] = [];
  const logFiles: string[] = [];
  let example = '';
  for (let i = 0; i < procs; i++) {
    const body = join(spec.dir, `body-${i}.bin`);
    const message = spec.kind === 'issue'
      ? toBinary(IssueCouponRequestSchema, create(IssueCouponRequestSchema, { couponId: spec.couponId, userId: `${spec.userPrefix}${i}` }))
      : new Uint8Array(0);
    writeFileSync(body, grpcFrame(message));
    const logFile = join(spec.dir, `h2load-${i}.log`);
    logFiles.push(logFile);
    const conns = share(spec.connections, i);
    const args = ['-t1', `-c${conns}`, '-m1', `-n${Math.max(conns, share(spec.requests, i))}`, '-d', body,
      '-H', 'content-type: application/grpc', '-H', 'te: trailers',
      ...(spec.kind === 'issue' ? ['-H', `authorization: Bearer ${spec.token}`] : []),
      `--log-file=${logFile}`, `${spec.url}${path}`];
    if (i === 0) example = `h2load ${args.join(' ').replace(spec.token, '<token>').replaceAll(spec.dir, '<dir>')}`;
    const child = spawn(h2load.path, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    outputs.push('');
    child.stdout.on('data', (d: Buffer) => { outputs[i] += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { outputs[i] += d.toString(); });
    children.push(child);
  }
  spec.onStart?.(children.map((c) => c.pid!));
  let capped = false;
  const cap = setTimeout(() => { capped = true; for (const c of children) c.kill('SIGINT'); }, spec.durationCapS * 1000);
  await Promise.all(children.map(exitOf));
  clearTimeout(cap);
  const calls: Call[] = [];
  for (const f of logFiles) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      if (!line) continue;
      const [s, status, l] = line.split('\t');
      // The HTTP status only: a gRPC error is HTTP 200 with its code in the trailers.
      calls.push({ startUs: Number(s), latencyUs: Number(l), cls: status === '200' ? '?' : 'e', detail: status ?? '' });
    }
  }
  const generatorErrors: Record<string, number> = {};
  for (const out of outputs) {
    const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
    if (!m) { generatorErrors['no summary'] = (generatorErrors['no summary'] ?? 0) + 1; continue; }
    for (const [k, v] of [['failed', m[5]], ['errored', m[6]], ['timeout', m[7]]] as const) if (Number(v) > 0) generatorErrors[k] = (generatorErrors[k] ?? 0) + Number(v);
  }
  return {
    generator: 'h2load', command: `${procs} × ${example}`, tool: toolNote('h2load', 'nghttp2-client'),
    users: distinctUsers(spec), calls, ...summarize(calls), cpuSeconds: reapedChildrenSeconds() - cpu0, generatorErrors, capped,
    note: `h2load, ${procs} processes with one connection group each (${spec.connections} connections, 1 stream each); h2load sends one fixed body per process, so ${spec.kind === 'issue' ? `${procs} distinct users, each repeating` : 'the same empty request'}; gRPC codes from coupon-api's metrics`,
  };
}

async function runNodeGrpc(spec: LoadSpec): Promise<LoadRun> {
  const logFile = join(spec.dir, 'calls.log');
  const cpu0 = reapedChildrenSeconds();
  const child = spawn(process.execPath, [join(import.meta.dirname, 'grpc-load.ts'), JSON.stringify({
    url: spec.url, kind: spec.kind, couponId: spec.couponId, token: spec.token, userPrefix: spec.userPrefix,
    users: spec.users, requests: spec.requests, connections: spec.connections, logFile, timeoutMs: 5_000,
  })], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  spec.onStart?.([child.pid!]);
  let capped = false;
  const cap = setTimeout(() => { capped = true; child.kill('SIGKILL'); }, spec.durationCapS * 1000);
  await exitOf(child);
  clearTimeout(cap);
  const summary = /\{"summary":(\{.*\})\}/.exec(out)?.[1];
  const errors = summary ? (JSON.parse(summary) as { errors: Record<string, number> }).errors : { 'no summary': 1 };
  const calls = existsSync(logFile) ? parseLog(readFileSync(logFile, 'utf8')) : [];
  return {
    generator: 'node grpc-load', command: `node bench/grpc-load.ts '<spec>' (${spec.connections} HTTP/2 sessions, 1 call in flight each)`, tool: `${process.execPath} (this Node)`,
    users: distinctUsers(spec), calls, ...summarize(calls), cpuSeconds: reapedChildrenSeconds() - cpu0,
    generatorErrors: Object.fromEntries(Object.entries(errors).map(([k, v]) => [`grpc-status ${k}`, v])), capped,
    note: `bench/grpc-load.ts (node:http2), ${spec.connections} sessions with one call in flight each; call i for user i mod ${spec.users}`,
  };
}

export function runLoad(spec: LoadSpec): Promise<LoadRun> {
  if (spec.protocol === 'connect-h1') return runWrk(spec);
  return spec.grpcClient === 'node' ? runNodeGrpc(spec) : runH2load(spec);
}
