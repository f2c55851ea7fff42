// The chaos run (`npm run chaos`, issue 9 §8) with a fixed seed and a short schedule: a flash sale
// and payments while coupon-api and coupon-issuer are killed, the broker stops, Redis restarts
// empty and PostgreSQL is cut, and an operator pauses, resumes and restocks the sale and closes a
// second one early (issue 19), on infrastructure the run starts for itself. Afterwards every user
// who heard OK holds their coupon, exactly the restocked total is issued, every redemption is what
// the payment service was told (I1–I5), and every operator change held (chaos/lifecycle.ts).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

describe('the chaos run', () => {
  it('seed 1 for 40 s of faults ends with chaos: PASS and exit code 0', { timeout: 330_000 }, async () => {
    const child = spawn(process.execPath, [join(root, 'chaos', 'run.ts'), '--seed', '1', '--duration', '40'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let errors = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { errors += d.toString(); });
    // SIGTERM makes the run clean up what it started and fail; it never outlives the test.
    const stop = setTimeout(() => child.kill('SIGTERM'), 300_000);
    const [code] = (await once(child, 'exit')) as [number | null];
    clearTimeout(stop);
    const lines = output.trim().split('\n');
    const last = lines.at(-1) ?? '';
    expect(last, `${lines.slice(-60).join('\n')}\n${errors.slice(-3_000)}`).toMatch(/^chaos: PASS seed=1 coupon=[0-9a-f-]{36} faults=\d+ ok=\d+ issued=\d+ total=\d+$/);
    expect(code).toBe(0);
    // Issued is the total the run's model holds: the quantity (200) plus each restock answered OK.
    // Seed 1 schedules a restock, a pause and the close, and each was applied.
    const [, issued, total] = /issued=(\d+) total=(\d+)$/.exec(last)!;
    expect(Number(issued)).toBe(Number(total));
    expect(Number(total)).toBeGreaterThan(200);
    const applied = lines.find((l) => l.startsWith('faults: ')) ?? '';
    for (const kind of ['pause', 'restock', 'close']) expect(applied).toMatch(new RegExp(`\\b${kind}=\\d+`));
  });
});
