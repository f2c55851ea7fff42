// Telling an outage from a poison record (docs/design.md#outages-versus-poison). An outage is a
// dependency that is unreachable, slow or overloaded right now: the work is retried until it comes
// back, and never dead-lettered. Anything else is the record's (or the code's) own problem.
import { DomainError, isRetryableReason } from './errors.ts';

// PostgreSQL SQLSTATEs: connection exceptions (08xxx, with 08P01 from poolers and proxies), too many connections (53300), out of
// memory/disk (53xxx), query canceled or statement timeout (57014), admin/crash shutdown and
// cannot-connect-now (57P01..57P03), serialization failure and deadlock (40001, 40P01), and a
// read-only transaction (25006: pooled connections to a former primary after a failover).
const PG_OUTAGE = /^(08[0-9A-Z]{3}|53\d{3}|57014|57P0[1-3]|40001|40P01|25006)$/;
// Node socket errors.
const NET_OUTAGE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED']);
// Error classes of the clients: knex pool timeouts, ioredis giving up on a command, kafkajs and the
// project's publisher, registry client and replica acknowledgements.
const OUTAGE_NAMES = new Set([
  'KnexTimeoutError', 'MaxRetriesPerRequestError', 'PublishError', 'SchemaRegistryError',
  'KafkaJSConnectionError', 'KafkaJSRequestTimeoutError', 'KafkaJSNumberOfRetriesExceeded', 'KafkaJSBrokerNotFound', 'KafkaJSLockTimeout',
  'KafkaJSConnectionClosedError', 'ClusterAllFailedError',
  // Fewer Redis replicas acknowledged a write than REDIS_WAIT_REPLICAS asks for (a replica slow,
  // stopped or resyncing, a shard between failover and its new replica): wait until one can.
  'ReplicaNotAcknowledged',
  // A consumer could not write to its dead-letter topic: retried, never answered with more dead letters.
  'DeadLetterWriteFailed',
  // A Redis script call the client did not settle in time (store/scripts.ts).
  'RedisCallUnsettled',
]);
// Redis replies that mean "busy, full or failing over" (OOM: maxmemory reached under the
// noeviction policy; MISCONF: it cannot persist), client messages of a closed connection, and
// ioredis Cluster's own while a failover moves slots (its slot map is being refreshed, a node is
// gone, redirections ran out). MOVED and ASK too: the node did not run the command; ioredis follows
// them itself, except in an auto-pipelined batch that mixes them with other answers, where it hands
// the redirection to the caller (seen right after a failover: test-cluster/proof.test.ts). Also
// from a failover: ioredis Cluster refusing an auto-pipeline whose slots' node groups moved apart
// (every command's keys share one hash tag, so only a topology change does that), a pipeline cut by
// a closed connection, and WAIT on a master demoted while it waited (UNBLOCKED) or by the time it
// got there. And ioredis's commandTimeout (REDIS_COMMAND_TIMEOUT_MS): Redis did not answer in time,
// the path to it silently dropping packets or the server stalled.
const MESSAGE_OUTAGE = /^(BUSY|LOADING|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|READONLY|NOREPLICAS|OOM|MISCONF|MOVED|ASK|UNBLOCKED)\b|^Command timed out$|WAIT cannot be used with replica|slots allocation group|Command aborted due to connection close|Stream isn't writeable|Connection is closed|Connection terminated|connect ECONNREFUSED|timeout exceeded when trying to connect|Client has encountered a connection error|Redis is unreachable|Cluster isn't ready|Cluster is disconnect|Node is disconnected|None of startup nodes is available|Too many Cluster redirections|Failed to refresh slots cache/;

/** True for errors that mean a dependency is unreachable or overloaded right now (retry later). */
export function isOutage(err: unknown): boolean {
  if (err instanceof DomainError) return isRetryableReason(err.reason);
  const e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown } | null | undefined;
  if (!e || typeof e !== 'object') return false;
  const code = typeof e.code === 'string' ? e.code : '';
  if (NET_OUTAGE.has(code) || PG_OUTAGE.test(code)) return true;
  if (typeof e.name === 'string' && OUTAGE_NAMES.has(e.name)) return true;
  // A broker's answer that Kafka itself calls retriable (LEADER_NOT_AVAILABLE during an election,
  // NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, …), also when kafkajs hands it on inside a
  // KafkaJSNonRetriableError after its own retries ran out (found below through `cause`).
  if (e.name === 'KafkaJSProtocolError' && (e as { retriable?: unknown }).retriable === true) return true;
  if (typeof e.message === 'string' && MESSAGE_OUTAGE.test(e.message)) return true;
  // AggregateError (several addresses refused) and wrapped causes.
  if (Array.isArray((e as { errors?: unknown }).errors) && (e as { errors: unknown[] }).errors.some(isOutage)) return true;
  return e.cause !== undefined && e.cause !== err && isOutage(e.cause);
}
