// Ceilings measured in the same run as the gate:
//   - the gate's Lua script alone: redis-benchmark (Debian's redis-tools) calling EVALSHA of
//     gate-reserve.lua (with lib/expiry.lua in front: src/store/scripts.ts scriptSource) against a
//     throwaway coupon armed with the run's quantity, R calls from C connections, users drawn at
//     random from U (redis-benchmark's -r and __rand_int__), so repeats and sold-out answers mix in
//     as in the gate run;
//   - PostgreSQL's bulk-insert rate for the ledger's row shape: Q user_coupons rows of a throwaway
//     coupon, inserted from one connection in statements of the issuer's batch size with the same
//     unnest(...) input the issuer's INSERT uses, then deleted with the coupon.
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Redis } from 'ioredis';
import type { Db } from '../src/store/db.ts';
import { gateArm } from '../src/gate/gate-scripts.ts';
import { allCouponKeys, couponKeys } from '../src/store/keys.ts';
import { CouponScripts, scriptKeys, scriptSource } from '../src/store/scripts.ts';
import { reapedChildrenSeconds } from './cpu.ts';
import { toolNote } from './load.ts';
import { ensureDebianTool } from '../scripts/debian-tools.ts';

export interface LuaCeiling {
  callsPerSec: number; calls: number; connections: number; users: number;
  latencyMs: { p50: number; p99: number; max: number };
  winners: number; quantity: number; cpuSecondsRedisBenchmark: number; command: string; tool: string;
}

export async function luaCeiling(redis: Redis, redisPort: number, o: { quantity: number; users: number; requests: number; connections: number }): Promise<LuaCeiling> {
  const couponId = randomUUID();
  const now = Date.now();
  const scripts = new CouponScripts(redis, { retentionMs: 3_600_000 });
  // Armed as catalog.ts arms a new coupon; every key expires within the hour should cleanup fail.
  await gateArm(scripts, couponId, { total: o.quantity, opensMs: now - 60_000, closesMs: 0, validUntilMs: 0, expireAtMs: now + 3_600_000, retentionMs: 3_600_000 });
  const sha = (await redis.script('LOAD', scriptSource('gateReserve'))) as string;
  const keys = scriptKeys('gateReserve', couponId);
  const bin = ensureDebianTool('redis-benchmark', 'redis-tools').path;
  const args = ['-h', '127.0.0.1', '-p', String(redisPort), '-c', String(o.connections), '-n', String(o.requests), '-r', String(o.users), '--csv',
    'EVALSHA', sha, String(keys.length), ...keys, 'bench-user-__rand_int__', String(now), '1'];
  const cpu0 = reapedChildrenSeconds();
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  await once(child, 'exit');
  const cpu = reapedChildrenSeconds() - cpu0;
  try {
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    const row = out.split('\n').find((l) => l.startsWith('"EVALSHA'));
    if (!row) throw new Error(`redis-benchmark gave no result:\n${out.slice(-1500)}`);
    const f = row.split('","').map((s) => s.replaceAll('"', ''));
    const winners = await redis.hlen(couponKeys(couponId).winners);
    return {
      callsPerSec: Number(f[1]), calls: o.requests, connections: o.connections, users: o.users,
      latencyMs: { p50: Number(f[4]), p99: Number(f[6]), max: Number(f[7]) },
      winners, quantity: o.quantity, cpuSecondsRedisBenchmark: cpu,
      command: `redis-benchmark -c ${o.connections} -n ${o.requests} -r ${o.users} EVALSHA <gate-reserve> ${keys.length} <coupon keys> bench-user-__rand_int__ <now> 1`,
      tool: toolNote('redis-benchmark', 'redis-tools'),
    };
  } finally {
    await redis.del(...allCouponKeys(couponId));
  }
}

export interface InsertCeiling { rowsPerSec: number; rows: number; batch: number; statements: number; seconds: number; statement: string }

export async function insertCeiling(db: Db, o: { rows: number; batch: number }): Promise<InsertCeiling> {
  const couponId = randomUUID();
  const day = 86_400_000;
  await db('coupons').insert({ id: couponId, name: 'bench insert ceiling (throwaway)', total_quantity: o.rows, opens_at: new Date(Date.now() - day), closes_at: new Date(Date.now() + day), valid_until: new Date(Date.now() + 30 * day) });
  const statement = `INSERT INTO user_coupons (coupon_id, user_id, seq, requested_at)
    SELECT * FROM unnest(?::uuid[], ?::text[], ?::bigint[], ?::timestamptz[]) ON CONFLICT DO NOTHING`;
  let statements = 0;
  try {
    const requestedAt = new Date().toISOString();
    await db.raw('SELECT 1'); // a pooled connection, ready before the clock starts
    const t0 = performance.now();
    for (let from = 0; from < o.rows; from += o.batch) {
      const n = Math.min(o.batch, o.rows - from);
      const seqs = Array.from({ length: n }, (_, i) => from + i + 1);
      await db.raw(statement, [seqs.map(() => couponId), seqs.map((s) => `ceiling-user-${s}`), seqs.map(String), seqs.map(() => requestedAt)]);
      statements++;
    }
    const seconds = (performance.now() - t0) / 1000;
    return { rowsPerSec: o.rows / seconds, rows: o.rows, batch: o.batch, statements, seconds, statement: statement.replace(/\s+/g, ' ') };
  } finally {
    await db('user_coupons').where({ coupon_id: couponId }).delete();
    await db('coupons').where({ id: couponId }).delete();
  }
}
