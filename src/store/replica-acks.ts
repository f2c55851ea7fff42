// Waiting for replicas (docs/scaling.md#redis-cluster). Redis replicates asynchronously: a master that
// fails over can lose a write its client already heard back about. Before the gate or redemption
// answers OK for a change, it asks the master that made it for WAIT <replicas> <timeout>: how many
// replicas acknowledged every write this connection made so far. Fewer than wanted, and the caller
// hears UNAVAILABLE instead of OK.
//
// WAIT counts the writes of the connection it is sent on, and blocks that connection while it
// waits; so it goes to the same connection the script ran on (the slot's master, looked up right
// after the script answered), and the waits of one node are grouped: one WAIT in flight per node,
// covering every script that answered before it was sent (group commit). A burst costs one
// replication round trip, not one per request.
import type { Redis, SingleRedis } from './redis.ts';
import { nodeFor } from './redis.ts';

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
   * Returns the node that serves `key`, to be taken right after a script on that key answered;
   * `confirm` then waits on that node even if the slot moved meanwhile.
   */
  nodeOf(key: string): SingleRedis | undefined {
    return this.enabled ? nodeFor(this.redis, key) : undefined;
  }

  /**
   * Resolves once `replicas` replicas acknowledged every write made so far through the connection
   * to the node that served `key`; rejects with ReplicaNotAcknowledged when fewer did within the
   * timeout, or with the node's error. A no-op when waiting is off.
   */
  async confirm(key: string, node = this.nodeOf(key)): Promise<void> {
    if (!this.enabled) return;
    if (!node) throw new ReplicaNotAcknowledged(`no Redis node known for ${key}; the write is not confirmed on a replica`);
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
