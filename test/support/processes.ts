// Starts the real coupon-api / coupon-issuer as child processes, exactly as `npm start` does, and
// waits for them to say they are ready. Each test file gets its own processes and port.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { withLocalAuth } from '../../scripts/local-auth.ts';

const root = join(import.meta.dirname, '..', '..');

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly logs: Record<string, unknown>[];
  /** host:port for @grpc/grpc-js (api only). */
  readonly address: string;
  /** http://host:port (api only). */
  readonly url: string;
  /** http://host:port/metrics of this process (Prometheus text). */
  readonly metricsUrl: string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
  /** Resolves when a log line matching `msg` appears. */
  waitForLog(msg: string | RegExp, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** `readyTimeoutMs`: how long to wait for the ready line (60 s by default; workers start one after another). */
export async function startService(name: 'api' | 'issuer', env: Record<string, string> = {}, readyMsg?: string, readyTimeoutMs = 60_000): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [join(root, 'src', 'bin', `${name}.ts`)], {
    cwd: root,
    // coupon-api trusts the local signing key unless the caller configured auth otherwise.
    // Port 0 everywhere: test files run in parallel, and each process picks free ports.
    env: await withLocalAuth({ ...process.env, API_PORT: '0', API_METRICS_PORT: '0', ISSUER_METRICS_PORT: '0', LOG_LEVEL: 'info', LOG_PRETTY: 'false', ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const waiters: { match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  createInterface({ input: child.stdout }).on('line', (line) => {
    let entry: Record<string, unknown>;
    try { entry = JSON.parse(line) as Record<string, unknown>; } catch { entry = { msg: line }; }
    logs.push(entry);
    for (const w of [...waiters]) if (w.match(entry)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(entry); }
  });
  const exited = once(child, 'exit');

  const waitForLog = (msg: string | RegExp, timeoutMs = 60_000) => {
    const match = (l: Record<string, unknown>) => typeof l.msg === 'string' && (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg));
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no log "${String(msg)}" within ${timeoutMs} ms; stderr:\n${stderr}\nlogs:\n${logs.slice(-20).map((l) => JSON.stringify(l)).join('\n')}`)), timeoutMs);
      waiters.push({ match, resolve: (l) => { clearTimeout(timer); resolve(l); } });
      void exited.then(() => { clearTimeout(timer); reject(new Error(`coupon-${name} exited before "${String(msg)}"; stderr:\n${stderr}\nlogs:\n${logs.slice(-20).map((l) => JSON.stringify(l)).join('\n')}`)); });
    });
  };

  let ready: Record<string, unknown>;
  try {
    ready = await waitForLog(readyMsg ?? (name === 'api' ? 'coupon-api listening' : 'coupon-issuer consuming'), readyTimeoutMs);
  } catch (err) {
    // Never leave a process that did not start behind (with API_WORKERS, its workers follow it).
    if (child.exitCode === null) child.kill('SIGKILL');
    throw err;
  }
  const port = Number(ready.port ?? 0);
  return {
    child, logs, waitForLog,
    address: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    metricsUrl: `http://127.0.0.1:${Number(ready.metricsPort ?? 0)}/metrics`,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = (await exited) as [number | null];
      return code;
    },
    async kill() {
      if (child.exitCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Runs a command and returns its exit code and output. */
export async function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(cmd, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

export const bufBin = join(root, 'node_modules', '.bin', 'buf');
