// coupon-api and coupon-issuer for the bench, started as `npm start` starts them (node
// src/bin/<name>.ts, the local signing key trusted through scripts/local-auth.ts, LOG_LEVEL info
// unless told otherwise), on free ports and under the bench's own topic prefix; from this checkout
// or, with --compare, from another commit's worktree (`root`). Logs are JSON lines as in
// production (LOG_PRETTY=false) or, with --log-format pretty, rendered as `npm start` renders them.
// Unlike test/support/processes.ts they are not parsed line by line (that would cost the bench
// process CPU the servers need): they go to a file beside the results, and only the lines the bench
// waits for are read.
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { launchService, READY_MSG } from '../test/support/launch.ts';
import { freePort } from '../test/support/ports.ts';

const here = join(import.meta.dirname, '..');

export type LogFormat = 'json' | 'pretty';

export interface StartOptions {
  /** Lines whose msg is one of these are kept, parsed (JSON logs only). */
  keep?: string[];
  /** The checkout whose src/bin/<name>.ts runs [this one]. */
  root?: string;
  logFormat?: LogFormat;
}

export interface Service {
  readonly name: 'api' | 'issuer';
  readonly child: ChildProcess;
  readonly pid: number;
  /** http://127.0.0.1:port (api). */
  readonly url: string;
  /** host:port for @grpc/grpc-js (api). */
  readonly address: string;
  readonly metricsUrl: string;
  readonly logFile: string;
  /** Lines whose msg is one of `keep`, parsed (empty with pretty logs). */
  readonly kept: Record<string, unknown>[];
  stop(): Promise<number | null>;
}

export async function startService(name: 'api' | 'issuer', env: Record<string, string>, logFile: string, o: StartOptions = {}): Promise<Service> {
  const root = o.root ?? here;
  const pretty = o.logFormat === 'pretty';
  // Pretty lines carry no parseable port: the ports are chosen here instead of by the kernel.
  const ports = pretty
    ? { API_PORT: String(await freePort()), API_METRICS_PORT: String(await freePort()), ISSUER_METRICS_PORT: String(await freePort()) }
    : { API_PORT: '0', API_METRICS_PORT: '0', ISSUER_METRICS_PORT: '0' };
  const child = await launchService(name, { ...ports, LOG_PRETTY: String(pretty), ...env }, { root });
  const out = createWriteStream(logFile);
  out.on('error', () => { /* a log line after the end: dropped */ });
  child.stderr.pipe(out, { end: false });
  const readyMsg = READY_MSG[name];
  const kept: Record<string, unknown>[] = [];
  const exited = once(child, 'exit');
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`coupon-${name} did not start within 90 s; see ${logFile}`)), 90_000);
    void exited.then(() => {
      clearTimeout(timer);
      const tail = (() => { try { return readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n'); } catch { return ''; } })();
      reject(new Error(`coupon-${name} exited (code ${child.exitCode}); last lines of ${logFile}:\n${tail}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      out.write(`${line}\n`);
      if (pretty) {
        if (line.includes(readyMsg)) { clearTimeout(timer); resolve({ port: Number(ports.API_PORT), metricsPort: Number(name === 'api' ? ports.API_METRICS_PORT : ports.ISSUER_METRICS_PORT) }); }
        return;
      }
      if (line.includes(`"msg":"${readyMsg}"`)) { clearTimeout(timer); resolve(JSON.parse(line) as Record<string, unknown>); }
      for (const msg of o.keep ?? []) if (line.includes(`"msg":"${msg}"`)) kept.push(JSON.parse(line) as Record<string, unknown>);
    });
  });
  const info = await ready;
  const port = Number(info.port ?? 0);
  return {
    name, child, pid: child.pid!, kept, logFile,
    url: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    metricsUrl: `http://127.0.0.1:${Number(info.metricsPort ?? 0)}/metrics`,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited.catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 50));
      out.end();
      return child.exitCode;
    },
  };
}

/** The sum of a Prometheus text metric's samples whose labels include all of `labels`. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const set = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

export async function scrape(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return res.text();
}
