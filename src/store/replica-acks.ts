// Waiting for replicas (docs/scaling.md#redis-cluster). Redis replicates asynchronously: a master that
// fails over can lose a write its client already heard back about. Before the gate or redemption
// answers OK for a change, it asks the master that made it for WAIT <replicas> <timeout>: how many
// replicas acknowledged every write this connection made so far. Fewer than wanted, and the caller
// hears UNAVAILABLE instead of OK.
//
// WAIT counts the writes of the connection it is sent on, and blocks that connection while it
// waits; so it must go to the connection the script ran on. That node is taken BEFORE the script
// is sent (nodeOf), and confirm refuses if the slot's master is another one when the script has
// answered: the script may then have run on a node the slot left. After a failover, a paused old
// master can wake up and run a script before it learns it was demoted, while the client has
// already learnt the new master; a WAIT sent to the new master would count that master's
// replicas, not the write, and answer OK for a write that dies with the old master. The waits of
// one node are grouped: one WAIT in flight per node, covering every script that answered before
// it was sent (group commit). A burst costs one replication round trip, not one per request.
import type { Redis, SingleRedis } from './redis.ts';
import { nodeFor } from './redis.ts';

const describe = (node: SingleRedis) => `${node.options.host}:${node.options.port}`;

export class ReplicaNotAcknowledged extends Error {
  override name = 'ReplicaNotAcknowledged';
}

export interface ReplicaAcksOptions {
  /** REDIS_WAIT_REPLICAS: 0 turns waiting off. */
  replicas: number;
  /** REDIS_WAIT_TIMEOUT_MS: how long one WAIT may block. */
  timeoutMs: number;
}

interface Batch { waiters: { resolve(n: number): void; reject(err: unknown): void }[] }

export class ReplicaAcks {
  readonly replicas: number;
  readonly timeoutMs: number;
  private readonly redis: Redis;
  /** Per node: the batch being collected, and whether a WAIT is in flight. */
  private readonly nodes = new Map<SingleRedis, { next: Batch | undefined; busy: boolean }>();

  constructor(redis: Redis, options: ReplicaAcksOptions) {
    this.redis = redis;
    this.replicas = options.replicas;
    this.timeoutMs = options.timeoutMs;
  }

  get enabled(): boolean { return this.replicas > 0; }

  /**
   * Returns the node that serves `key` now: take it right BEFORE sending a script on that key, and
   * hand it to `confirm` once the script answered.
   */
  nodeOf(key: string): SingleRedis | undefined {
    return this.enabled ? nodeFor(this.redis, key) : undefined;
  }

  /**
   * Call right after the script on `key` answered, with `node` taken before it was sent. Resolves
   * once `replicas` replicas acknowledged every write made so far through the connection to
   * `node`; rejects with ReplicaNotAcknowledged when the slot is now served by another node (the
   * script may have run on either: nothing can be confirmed), when fewer replicas acknowledged
   * within the timeout, or with the node's error. A no-op when waiting is off.
   */
  async confirm(key: string, node: SingleRedis | undefined): Promise<void> {
    if (!this.enabled) return;
    if (!node) throw new ReplicaNotAcknowledged(`no Redis node known for ${key}; the write is not confirmed on a replica`);
    const now = this.nodeOf(key);
    if (now !== node) {
      throw new ReplicaNotAcknowledged(`the slot of ${key} moved from ${describe(node)} to ${now ? describe(now) : 'no known master'} while the script ran; the write is not confirmed`);
    }
    const acked = await this.wait(node);
    if (acked < this.replicas) {
      throw new ReplicaNotAcknowledged(`only ${acked} of ${this.replicas} Redis replicas acknowledged the write within ${this.timeoutMs} ms`);
    }
  }

  private wait(node: SingleRedis): Promise<number> {
    let state = this.nodes.get(node);
    if (!state) { state = { next: undefined, busy: false }; this.nodes.set(node, state); }
    const batch = state.next ?? (state.next = { waiters: [] });
    const done = new Promise<number>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    if (!state.busy) this.flush(node, state);
    return done;
  }

  private flush(node: SingleRedis, state: { next: Batch | undefined; busy: boolean }): void {
    const batch = state.next;
    if (!batch) { this.nodes.delete(node); return; }
    state.next = undefined;
    state.busy = true;
    // Sent now: every script whose answer its waiters saw ran before it on this connection.
    (node.call('WAIT', this.replicas, this.timeoutMs) as Promise<number>).then(
      (n) => { for (const w of batch.waiters) w.resolve(Number(n)); },
      (err: unknown) => { for (const w of batch.waiters) w.reject(err); },
    ).finally(() => {
      state.busy = false;
      this.flush(node, state);
    });
  }
}
