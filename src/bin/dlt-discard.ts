// `npm run dlt:discard -- --id <topic>/<partition>/<offset> --reason "<text>" [--by <name>]`: gives
// up a dead letter that can never be replayed (ops/RUNBOOK.md, "Resolving a dead letter that can
// never be replayed"). The id is its source record's position, as the x-source-* headers, the
// dead_letters table and the `coupon.*.dead_lettered` log lines give it. Who (--by, else the login
// name), why and when are recorded in dead_letters; the coupon's rebuild stops waiting for it, and
// `npm run dlt:replay` leaves it on the dead-letter topic.
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { configOrExit } from './lifecycle.ts';
import { createDb, migrate } from '../store/db.ts';
import { deadLetterId, discardDeadLetter, parseDeadLetterId } from '../store/dead-letters.ts';

const usage = 'usage: npm run dlt:discard -- --id <topic>/<partition>/<offset> --reason "<why it can never be replayed>" [--by <name>]';
let args: { id?: string | undefined; reason?: string | undefined; by?: string | undefined };
try {
  ({ values: args } = parseArgs({ options: { id: { type: 'string' }, reason: { type: 'string' }, by: { type: 'string' } }, strict: true }));
} catch (err) {
  console.error(`dlt-discard: ${(err as Error).message}\n${usage}`);
  process.exit(2);
}
const source = args.id ? parseDeadLetterId(args.id) : undefined;
const reason = args.reason?.trim();
if (!source || !reason) {
  console.error(`dlt-discard: ${!source ? `--id must be <topic>/<partition>/<offset>, got ${JSON.stringify(args.id ?? '')}` : '--reason is required: say why it can never be replayed'}\n${usage}`);
  process.exit(2);
}
const by = args.by?.trim() || process.env.USER || userInfo().username;

const config = configOrExit('dlt-discard');
const db = createDb(config.DATABASE_URL, 1);
try {
  await migrate(db);
  const result = await discardDeadLetter(db, source, by, reason);
  const id = deadLetterId(source);
  if (result.outcome === 'NOT_FOUND') {
    console.error(`dlt-discard: no dead letter ${id} in dead_letters`);
    process.exitCode = 1;
  } else {
    const r = result.row;
    console.log(JSON.stringify({
      id, outcome: result.outcome, couponId: r.coupon_id, reason: r.reason, userId: r.user_id, seq: r.seq,
      discardedAt: r.discarded_at, discardedBy: r.discarded_by, discardReason: r.discard_reason, replayedAt: r.replayed_at,
    }));
    // Already replayed: there was nothing to give up, and the operator should know.
    if (result.outcome === 'ALREADY_REPLAYED') process.exitCode = 1;
  }
} finally {
  await db.destroy();
}
