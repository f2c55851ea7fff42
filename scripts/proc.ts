// Process primitives for the local stacks (scripts/stack.ts, scripts/cluster-stack.ts): log lines,
// waiting for a port or a condition, and background processes that outlive the script that
// started them, each known by a pid file `<dir>/<name>.pid` with its output in `<dir>/<name>.log`.
// A library only; it knows nothing of Kafka, the registry or Redis.
import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';

export const log = (msg: string): void => console.log(`[stack] ${msg}`);
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether something accepts a TCP connection on host:port within a second. */
export function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host });
    socket.setTimeout(1000);
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('timeout', () => { socket.destroy(); resolve(false); });
    socket.once('error', () => resolve(false));
  });
}

/**
 * Polls `check` every half second until it holds; throws after `timeoutMs`, or at once when the
 * process of `pidFile` has exited, with the last lines of `logFile`.
 */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, logFile?: string, pidFile?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let why = `did not come up within ${timeoutMs / 1000}s`;
  while (Date.now() < deadline) {
    if (await check()) return;
    if (pidFile && !pidAlive(pidFile)) { why = 'exited while starting'; break; }
    await sleep(500);
  }
  const tail = logFile && existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n') : '';
  throw new Error(`${what} ${why}.${tail ? `\nLast lines of ${logFile}:\n${tail}` : ''}`);
}

/** The pid in `pidFile` when that process is alive, else false. */
export function pidAlive(pidFile: string): number | false {
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  try { process.kill(pid, 0); } catch { return false; }
  // A killed process whose parent has not reaped it yet (a zombie, state Z) is dead too.
  try { if (/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))) return false; } catch { /* no procfs */ }
  return pid;
}

/** Starts `cmd` in `dir`, detached, output to `<dir>/<name>.log`, pid to `<dir>/<name>.pid`; returns the log's path. */
export function startDetached(dir: string, name: string, cmd: string, args: string[], extraEnv: Record<string, string>): string {
  const cwd = dir;
  const logFile = join(dir, `${name}.log`);
  const out = openSync(logFile, 'w');
  const child = spawn(cmd, args, {
    cwd, detached: true, stdio: ['ignore', out, out], env: { ...process.env, ...extraEnv },
  });
  child.unref();
  writeFileSync(join(dir, `${name}.pid`), String(child.pid));
  return logFile;
}

/** Sends `signal` to the process of `<dir>/<name>.pid`, SIGKILL if it still runs 30 s later; removes the pid file. */
export async function stop(name: string, dir: string, signal: NodeJS.Signals = 'SIGTERM', label = name): Promise<void> {
  const pidFile = join(dir, `${name}.pid`);
  const pid = pidAlive(pidFile);
  if (!pid) { log(`${label}: not running`); rmSync(pidFile, { force: true }); return; }
  process.kill(pid, signal);
  for (let i = 0; i < 60 && pidAlive(pidFile); i++) await sleep(500);
  if (pidAlive(pidFile)) process.kill(pid, 'SIGKILL');
  rmSync(pidFile, { force: true });
  log(`${label}: stopped`);
}
