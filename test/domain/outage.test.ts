// Outage or not: the replies Redis Cluster gives while a failover moves a slot are outages (the
// command did not run; retry), whatever ioredis passes on to the caller.
import { describe, expect, it } from 'vitest';
import { isOutage } from '../../src/domain/outage.ts';
import { ReplicaNotAcknowledged } from '../../src/store/replica-acks.ts';

const reply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });

describe('isOutage', () => {
  it('counts redirections and failover replies as outages', () => {
    for (const m of ['MOVED 6385 127.0.0.1:17103', 'ASK 6385 127.0.0.1:17101', 'CLUSTERDOWN The cluster is down', 'TRYAGAIN Multiple keys request during rehashing of slot']) {
      expect(isOutage(reply(m)), m).toBe(true);
    }
  });
  it('counts a write no replica acknowledged as an outage (the shard has no replica that can answer yet)', () => {
    expect(isOutage(new ReplicaNotAcknowledged('only 0 of 1 Redis replicas acknowledged the write within 500 ms'))).toBe(true);
  });
  it('does not count a script error or a wrong command as an outage', () => {
    for (const m of ['ERR Error running script (call to f_x): @user_script:1: bad', 'WRONGTYPE Operation against a key holding the wrong kind of value', 'ERR MOVED is not a command']) {
      expect(isOutage(reply(m)), m).toBe(false);
    }
  });
});
