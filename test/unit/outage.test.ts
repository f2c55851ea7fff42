// Outage or not: the replies Redis Cluster gives while a failover moves a slot are outages (the
// command did not run; retry), whatever ioredis passes on to the caller.
import { describe, expect, it } from 'vitest';
import { loadConfig, redisTarget } from '../../src/config.ts';
import { isOutage } from '../../src/domain/outage.ts';
import { ReplicaNotAcknowledged } from '../../src/store/replica-acks.ts';
import { createRequire } from 'node:module';
import kafkajs from 'kafkajs';

// kafkajs's own table of broker error codes, and its constructors as they run (the published types
// leave out the options): the errors below are built the way kafkajs builds them.
const { createErrorFromCode } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as { createErrorFromCode(code: number): Error };
const NonRetriable = kafkajs.KafkaJSNonRetriableError as unknown as new (e: Error, o: { cause: Error }) => Error;
const RetriesExceeded = kafkajs.KafkaJSNumberOfRetriesExceeded as unknown as new (e: Error, o: { retryCount: number; retryTime: number }) => Error;

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
  it('counts the replies of a Redis master demoted while a WAIT waits on it as outages', () => {
    for (const m of ['UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)', 'ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.']) {
      expect(isOutage(reply(m)), m).toBe(true);
    }
  });
  it('counts a Redis command that got no answer within REDIS_COMMAND_TIMEOUT_MS as an outage', () => {
    expect(isOutage(new Error('Command timed out'))).toBe(true);
  });
  it('counts ioredis errors of a topology change or a dropped connection as outages', () => {
    expect(isOutage(new Error('All keys in the pipeline should belong to the same slots allocation group'))).toBe(true);
    expect(isOutage(Object.assign(new Error('Command aborted due to connection close'), { name: 'AbortError' }))).toBe(true);
  });
  it('counts a broker error Kafka calls retriable as an outage, also inside the error kafkajs gives up with', () => {
    const election = new kafkajs.KafkaJSProtocolError(createErrorFromCode(5)); // LEADER_NOT_AVAILABLE
    expect(isOutage(election)).toBe(true);
    const gaveUp = new NonRetriable(new RetriesExceeded(election, { retryCount: 5, retryTime: 3000 }), { cause: election });
    expect(isOutage(new NonRetriable(election, { cause: election }))).toBe(true);
    expect(isOutage(gaveUp)).toBe(true);
    // A refusal Kafka calls final is the record's own problem.
    expect(isOutage(new kafkajs.KafkaJSProtocolError(createErrorFromCode(10)))).toBe(false); // MESSAGE_TOO_LARGE
  });
  it('counts a PostgreSQL protocol violation from a pooler or proxy (08P01) as an outage', () => {
    expect(isOutage(Object.assign(new Error('server conn crashed?'), { code: '08P01' }))).toBe(true);
    expect(isOutage(Object.assign(new Error('duplicate key value'), { code: '23505' }))).toBe(false);
  });
  it('does not count a script error or a wrong command as an outage', () => {
    for (const m of ['ERR Error running script (call to f_x): @user_script:1: bad', 'WRONGTYPE Operation against a key holding the wrong kind of value', 'ERR MOVED is not a command']) {
      expect(isOutage(reply(m)), m).toBe(false);
    }
  });
});

describe('Redis timeouts', () => {
  it('bound every Redis command at 2 s unless configured, and the services use that bound', () => {
    expect(redisTarget(loadConfig({})).commandTimeoutMs).toBe(2_000);
    expect(redisTarget(loadConfig({ REDIS_COMMAND_TIMEOUT_MS: '5000', REDIS_WAIT_TIMEOUT_MS: '3000' })).commandTimeoutMs).toBe(5_000);
  });
  it('refuse a WAIT timeout that the command timeout would cut short (a slow replica would read as an outage)', () => {
    expect(() => loadConfig({ REDIS_WAIT_TIMEOUT_MS: '2000' })).toThrow(/REDIS_WAIT_TIMEOUT_MS.*below REDIS_COMMAND_TIMEOUT_MS/);
  });
});
