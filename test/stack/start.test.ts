// `npm start` stopped with Ctrl-C: a terminal sends SIGINT to the whole foreground process group, so
// the services must not take it as one signal from the terminal plus a second from `npm start`
// (their "second signal: exit now"), and must drain and exit cleanly; nor as two when npm passes the
// same Ctrl-C on to its child once more.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kafka, uniqueEnv, until } from '../support/stack.ts';

const env = { ...uniqueEnv('start'), API_PORT: '0', API_METRICS_PORT: '0', ISSUER_METRICS_PORT: '0', API_WORKERS: '2', LOG_PRETTY: 'false' };
const root = join(import.meta.dirname, '..', '..');

afterAll(async () => {
  const admin = kafka().admin();
  await admin.connect();
  const topics = (await admin.listTopics()).filter((t) => t.startsWith(env.KAFKA_TOPIC_PREFIX));
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
});

describe('npm start and Ctrl-C', () => {
  it('SIGINT to the whole process group (a terminal\'s Ctrl-C) drains every service once and exits 0', { timeout: 90_000 }, async () => {
    await ctrlC((pid) => process.kill(-pid, 'SIGINT'));
  });
  it('the same Ctrl-C passed on once more (npm forwards it to its child) still drains', { timeout: 90_000 }, async () => {
    // npm's forward comes a moment later (two signals sent at once would merge into one).
    await ctrlC((pid) => { process.kill(-pid, 'SIGINT'); setTimeout(() => process.kill(pid, 'SIGINT'), 30); });
  });
});

async function ctrlC(send: (pid: number) => void): Promise<void> {
  // Its own process group, as a shell gives a foreground job.
  const child = spawn(process.execPath, [join(root, 'scripts', 'start.ts')], { cwd: root, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  // 'close': the exit code, and every line it printed.
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  try {
    await until('both services up', () => Promise.resolve(out.includes('coupon-issuer consuming') && out.includes('coupon-api listening')), 60_000);
    send(child.pid!);
    const [code] = await Promise.race([exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`npm start did not exit:\n${out.slice(-3000)}`)), 30_000))]);
    const messages = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; service?: string });
    expect(messages.filter((m) => m.msg === 'second signal; exiting now')).toEqual([]);
    // coupon-api (its primary and both workers) and coupon-issuer.
    expect(new Set(messages.filter((m) => m.msg === 'shut down cleanly').map((m) => m.service)), out.slice(-3000)).toEqual(new Set(['coupon-api', 'coupon-issuer']));
    expect(code).toBe(0);
  } finally {
    // Whatever is left of it: the services are in the same process group.
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* all gone */ }
  }
}
