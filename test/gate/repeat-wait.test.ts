// A repeat IssueCoupon is answered OK only after WAIT (REDIS_WAIT_REPLICAS), sent on the connection
// of the process that answers. WAIT waits for that connection's last write to reach the replicas,
// and the reservation it reports may be another process's. So the gate's script writes on a repeat
// too: its WAIT then covers everything written before on the master, the reservation included.
// A master and a replica of the test's own; the replica is kept busy (DEBUG SLEEP) so it
// acknowledges nothing while the repeat is decided. On this machine's Redis 7.0, a connection's WAIT
// offset advances with any command, reads included, so the property holds without the write too;
// Redis documents WAIT (and WAITAOF) as waiting for the connection's own writes, which is what the
// write in gate-reserve.lua relies on whatever the version.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { CouponScripts } from '../../src/store/scripts.ts';
import { gateReserve } from '../../src/gate/gate-scripts.ts';
import { couponKeys } from '../../src/store/keys.ts';
import { startOwnRedis, type OwnRedis } from '../support/redis-server.ts';
import { until } from '../support/stack.ts';

let master: OwnRedis;
let replica: OwnRedis;
const clients: Redis[] = [];
const client = (r: OwnRedis) => { const c = r.client(); clients.push(c); return c; };

beforeAll(async () => {
  // The full sync writes an RDB file: into a folder of the test's own, not the working directory.
  const dir = mkdtempSync(join(tmpdir(), 'repeat-wait-'));
  master = await startOwnRedis(['--dir', dir]);
  replica = await startOwnRedis(['--dir', dir, '--dbfilename', 'replica.rdb', '--enable-debug-command', 'yes']);
  await client(replica).call('REPLICAOF', '127.0.0.1', String(master.port));
  await until('the replica in sync', async () => /master_link_status:up/.test(await client(replica).info('replication')), 20_000);
}, 60_000);
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await Promise.all([replica?.stop(), master?.stop()]);
});

describe('a repeat answered by another process than the one that reserved', () => {
  it("waits for the replica to hold the other process's reservation before it could be told OK", async () => {
    const couponId = '0b7b1c54-9f3e-4d55-8f43-5f1f6bd1a001';
    const k = couponKeys(couponId);
    const reserving = client(master);
    const repeating = client(master);
    await reserving.hset(k.meta, 'total', '10', 'opens_ms', '0', 'closes_ms', '0', 'expire_at_ms', '0');
    // The repeating process has written before (its own older calls): WAIT on its connection
    // would pass at once for those.
    await repeating.set(`{${couponId}}:older-write`, '1');
    expect(await repeating.call('WAIT', '1', '2000')).toBe(1);

    // The replica stops acknowledging; one process reserves, another answers the user's repeat.
    const sleeping = client(replica).call('DEBUG', 'SLEEP', '1.5');
    await new Promise((r) => setTimeout(r, 100));
    expect(await gateReserve(new CouponScripts(reserving), couponId, 'u1', Date.now())).toMatchObject({ status: 'RESERVED', seq: 1 });
    expect(await gateReserve(new CouponScripts(repeating), couponId, 'u1', Date.now())).toMatchObject({ status: 'EXISTING', seq: 1 });
    // The repeat's WAIT: the replica holds nothing new, so it must not confirm.
    expect(await repeating.call('WAIT', '1', '300')).toBe(0);
    await sleeping;
    // Once the replica caught up, it confirms, and holds the reservation.
    expect(await repeating.call('WAIT', '1', '2000')).toBe(1);
    expect(await client(replica).hget(k.winners, 'u1')).toBe('1');
  });
});
