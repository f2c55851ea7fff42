// coupon-api and coupon-issuer as child processes, supervised the way an orchestrator would: a
// process that exits (a start that failed during an outage, or a crash) is started again with
// backoff, and a fault can SIGKILL one at any moment. Output goes to the run's log files; the
// supervisor reads it only for readiness and for alerts (dead letters).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { root } from './infra.ts';
import { READY_MSG, spawnService, type ServiceName } from '../test/support/launch.ts';
import { bounded, elapsed, pollUntil, say } from './journal.ts';

// A start that has not said it is ready by then is stuck; it is killed and started again.
const START_WATCHDOG_MS = 90_000;
const MAX_BACKOFF_MS = 5_000;

export type { ServiceName };

export class Service {
  readonly name: ServiceName;
  private readonly env: Record<string, string>;
  private readonly log: WriteStream;
  private child: ChildProcess | undefined;
  private wanted = false;
  private restartTimer: NodeJS.Timeout | undefined;
  private backoffMs = 1_000;
  ready = false;
  starts = 0;
  /** Exits the harness did not cause: failed starts during outages, or crashes. */
  unexpectedExits = 0;
  /** The last fatal log line's message and error, to say why a start failed. */
  lastFatal = 'no fatal log line';
  /** Records dead-lettered, by "<alert event>/<reason>", as the process's alerts reported them. */
  readonly alerts = new Map<string, number>();
  /** Other alerts (outages, blocked rebuilds), by event: how many times each was raised. */
  readonly otherAlerts = new Map<string, number>();

  constructor(name: ServiceName, env: Record<string, string>, logDir: string) {
    this.name = name;
    this.env = env;
    this.log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' });
  }

  start(): void {
    this.wanted = true;
    this.spawnChild();
  }

  private spawnChild(): void {
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    if (this.child || !this.wanted) return;
    this.starts++;
    const child = spawnService(this.name, this.env);
    this.child = child;
    this.log.write(`--- chaos: start #${this.starts}, pid ${child.pid}, at +${elapsed().toFixed(1)}s\n`);
    child.stderr.on('data', (d: Buffer) => this.log.write(d));
    createInterface({ input: child.stdout }).on('line', (line) => {
      this.log.write(`${line}\n`);
      this.onLine(line);
    });
    const watchdog = setTimeout(() => {
      if (this.child === child && !this.ready) {
        say(`${this.name} did not become ready within ${START_WATCHDOG_MS / 1000} s of starting; killing it`);
        child.kill('SIGKILL');
      }
    }, START_WATCHDOG_MS);
    child.once('exit', (code, signal) => {
      clearTimeout(watchdog);
      if (this.child !== child) return;
      this.child = undefined;
      this.ready = false;
      this.log.write(`--- chaos: exit code ${code} signal ${signal} at +${elapsed().toFixed(1)}s\n`);
      if (!this.wanted) return;
      this.unexpectedExits++;
      say(`${this.name} exited by itself (code ${code}, signal ${signal}); starting it again in ${this.backoffMs} ms`);
      this.restartTimer = setTimeout(() => this.spawnChild(), this.backoffMs);
      this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    });
  }

  private onLine(line: string): void {
    let entry: { msg?: unknown; alert?: unknown; reason?: unknown; records?: unknown; level?: unknown; err?: { message?: string } };
    try { entry = JSON.parse(line) as typeof entry; } catch { return; }
    if (entry.level === 60) this.lastFatal = `${String(entry.msg)}: ${String(entry.err?.message ?? '')}`;
    if (entry.msg === READY_MSG[this.name]) {
      this.ready = true;
      this.backoffMs = 1_000;
    }
    if (entry.alert === true && typeof entry.msg === 'string' && entry.msg.endsWith('.dead_lettered')) {
      const key = `${entry.msg}/${String(entry.reason)}`;
      this.alerts.set(key, (this.alerts.get(key) ?? 0) + Number(entry.records ?? 1));
    } else if (entry.alert === true) {
      this.otherAlerts.set(String(entry.msg), (this.otherAlerts.get(String(entry.msg)) ?? 0) + 1);
    }
  }

  waitReady(ms: number): Promise<boolean> {
    return pollUntil(ms, 100, () => Promise.resolve(this.ready));
  }

  /** A crash: SIGKILL, and no restart until `start`. */
  async kill(): Promise<void> {
    this.wanted = false;
    await this.signalAndWait('SIGKILL', 10_000);
  }

  /** Shutdown: SIGTERM (the process drains), SIGKILL if it has not exited within 15 s. */
  async stop(): Promise<void> {
    this.wanted = false;
    clearTimeout(this.restartTimer);
    try {
      await this.signalAndWait('SIGTERM', 15_000);
    } catch {
      await this.signalAndWait('SIGKILL', 10_000).catch(() => undefined);
    }
  }

  private async signalAndWait(signal: NodeJS.Signals, ms: number): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(signal);
    await bounded(`${this.name} to exit after ${signal}`, ms, exited);
  }

  close(): void {
    this.log.end();
  }
}

/** Runs a one-shot command (the operator's dlt-replay) with the services' settings, bounded. */
export async function runTool(script: string, args: string[], env: Record<string, string>, logDir: string, timeoutMs: number): Promise<{ code: number | null; stdout: string }> {
  const log = createWriteStream(join(logDir, 'tools.log'), { flags: 'a' });
  log.write(`--- chaos: ${script} ${args.join(' ')} at +${elapsed().toFixed(1)}s\n`);
  const child = spawn(process.execPath, [join(root, script), ...args], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: 'info', LOG_PRETTY: 'false', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); log.write(d); });
  child.stderr.on('data', (d: Buffer) => log.write(d));
  const exited = once(child, 'exit') as Promise<[number | null]>;
  try {
    const [code] = await bounded(`${script} ${args.join(' ')}`, timeoutMs, exited);
    return { code, stdout };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    log.end();
  }
}
