// Outage or not: the replies Redis Cluster gives while a failover moves a slot are outages (the
// command did not run; retry), whatever ioredis passes on to the caller.
import { describe, expect, it, vi } from 'vitest';
import { loadConfig, redisTarget } from '../../src/config.ts';
import { DomainError } from '../../src/domain/errors.ts';
import { isOutage } from '../../src/domain/outage.ts';
import { ReplicaNotAcknowledged } from '../../src/store/replica-acks.ts';
import { RedisCallUnsettled, runScript, scriptDeadlineMs } from '../../src/store/scripts.ts';
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

describe('isOutage, by kind of failure', () => {
  const coded = (code: string) => Object.assign(new Error(`failed with ${code}`), { code });
  const named = (name: string) => Object.assign(new Error('failed'), { name });

  it('follows the reason of a DomainError: only "dependency down, nothing decided" is an outage', () => {
    expect(isOutage(new DomainError('BACKEND_UNAVAILABLE', 'x'))).toBe(true);
    expect(isOutage(new DomainError('PUBLISH_FAILED', 'x'))).toBe(true);
    expect(isOutage(new DomainError('COUPON_NOT_FOUND', 'x'))).toBe(false);
    expect(isOutage(new DomainError('INVALID_FIELD', 'x'))).toBe(false);
  });

  it.each(['08006', '08001', '53300', '53100', '53200', '57014', '57P01', '57P02', '57P03', '40001', '40P01', '25006'])(
    'counts PostgreSQL SQLSTATE %s (connection, resources, cancel or shutdown, serialization, read-only) as an outage', (code) => {
      expect(isOutage(coded(code))).toBe(true);
    });

  it.each(['23505', '23503', '42P01', '22P02', '57P04', '40002'])('does not count PostgreSQL SQLSTATE %s as an outage', (code) => {
    expect(isOutage(coded(code))).toBe(false);
  });

  it.each(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED'])(
    'counts the socket error %s as an outage', (code) => {
      expect(isOutage(coded(code))).toBe(true);
    });

  it('does not count other system errors as outages', () => {
    expect(isOutage(coded('ENOENT'))).toBe(false);
    expect(isOutage(coded('EACCES'))).toBe(false);
  });

  it.each([
    'KnexTimeoutError', 'MaxRetriesPerRequestError', 'PublishError', 'SchemaRegistryError', 'KafkaJSConnectionError', 'KafkaJSRequestTimeoutError',
    'KafkaJSNumberOfRetriesExceeded', 'KafkaJSBrokerNotFound', 'KafkaJSLockTimeout', 'KafkaJSConnectionClosedError', 'ClusterAllFailedError',
    'ReplicaNotAcknowledged', 'DeadLetterWriteFailed',
  ])('counts a %s from a client as an outage', (name) => {
    expect(isOutage(named(name))).toBe(true);
  });

  it('does not count a programming error as an outage', () => {
    expect(isOutage(new TypeError("Cannot read properties of undefined (reading 'seq')"))).toBe(false);
    expect(isOutage(new RangeError('Invalid array length'))).toBe(false);
  });

  it.each([
    'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
    'LOADING Redis is loading the dataset in memory',
    'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to \'no\'.',
    "READONLY You can't write against a read only replica.",
    'NOREPLICAS Not enough good replicas to write.',
    "OOM command not allowed when used memory > 'maxmemory'.",
    'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
  ])('counts the Redis reply %j as an outage', (message) => {
    expect(isOutage(reply(message))).toBe(true);
  });

  it.each([
    'Connection is closed.', "Stream isn't writeable and enableOfflineQueue options is false", 'connect ECONNREFUSED 127.0.0.1:5432',
    'Connection terminated unexpectedly', 'timeout exceeded when trying to connect', "Cluster isn't ready and enableOfflineQueue options is false",
    'None of startup nodes is available', 'Too many Cluster redirections. Last error: MOVED 1 127.0.0.1:7001', 'Failed to refresh slots cache.',
  ])('counts the client message %j of a lost connection or cluster as an outage', (message) => {
    expect(isOutage(new Error(message))).toBe(true);
  });

  it('looks inside an AggregateError: an outage when any of its errors is one', () => {
    expect(isOutage(new AggregateError([new Error('bad'), coded('ECONNREFUSED')], 'all addresses failed'))).toBe(true);
    expect(isOutage(new AggregateError([new Error('bad'), new Error('worse')], 'all failed'))).toBe(false);
  });

  it('follows causes, however deep, and stops at an error that is its own cause', () => {
    const deep = new Error('batch failed', { cause: new Error('query failed', { cause: coded('ECONNRESET') }) });
    expect(isOutage(deep)).toBe(true);
    const loop = new Error('odd');
    Object.assign(loop, { cause: loop });
    expect(isOutage(loop)).toBe(false);
  });

  it('does not count what is not an error object', () => {
    for (const value of [null, undefined, 'ECONNREFUSED', 42]) expect(isOutage(value), String(value)).toBe(false);
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

describe('a Redis script call the client never settles', () => {
  // A stand-in for a Cluster client holding a command before any node (no command timeout runs there).
  const stuck = (commandTimeout: number) => {
    const client = { options: { redisOptions: { commandTimeout } }, defineCommand(name: string) { (client as unknown as Record<string, unknown>)[name] = () => new Promise(() => undefined); } };
    return client as unknown as Parameters<typeof runScript>[0];
  };

  it('ends at four command timeouts (at least 10 s) with RedisCallUnsettled, an outage', async () => {
    vi.useFakeTimers();
    try {
      const client = stuck(3_000);
      expect(scriptDeadlineMs(client)).toBe(12_000);
      expect(scriptDeadlineMs(stuck(2_000))).toBe(10_000);
      const call = runScript(client, 'gateConfirm', '00000000-0000-4000-8000-000000000000', ['u', 1, 1]);
      const outcome = call.then(() => 'settled', (err: unknown) => err);
      await vi.advanceTimersByTimeAsync(11_999);
      expect(await Promise.race([outcome, Promise.resolve('pending')])).toBe('pending');
      await vi.advanceTimersByTimeAsync(1);
      const err = await outcome;
      expect(err).toBeInstanceOf(RedisCallUnsettled);
      expect(isOutage(err)).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });
});
