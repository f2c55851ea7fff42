// The chaos run's own infrastructure, so its faults never touch the shared stack: its own Kafka
// broker (scripts/stack.ts with an instance of its own), its own redis-server (no persistence, so
// a restart loses everything), and its own database on the shared PostgreSQL server, reached
// through a TCP proxy that can be cut. Only the schema registry is shared; the run's subjects carry
// its unique topic prefix and are deleted at the end.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { kafkaDown, kafkaUp, type KafkaInstance } from '../scripts/stack.ts';
import { bounded } from './journal.ts';

export const root = join(import.meta.dirname, '..');

import { freePort } from '../test/support/ports.ts';

export { freePort };

/** Everything the run writes: .stack/chaos-<pid>/{kafka,redis,logs}. */
export class RunDir {
  readonly base: string;
  readonly kafka: string;
  readonly redis: string;
  readonly logs: string;

  constructor(id: string) {
    this.base = join(root, '.stack', `chaos-${id}`);
    this.kafka = join(this.base, 'kafka');
    this.redis = join(this.base, 'redis');
    this.logs = join(this.base, 'logs');
    for (const dir of [this.kafka, this.redis, this.logs]) mkdirSync(dir, { recursive: true });
  }

  /** Removes the run's directory, unless it is kept for reading (logs, and the broker's data). */
  remove(keep: boolean): void {
    if (!keep) rmSync(this.base, { recursive: true, force: true });
  }
}

/** A single-node KRaft broker on free ports, stopped and started as a fault. */
export class OwnKafka {
  readonly inst: KafkaInstance;
  running = false;

  constructor(inst: KafkaInstance) {
    this.inst = inst;
  }

  static async create(dir: string): Promise<OwnKafka> {
    return new OwnKafka({ dir, port: await freePort(), controllerPort: await freePort(), heap: '256m' });
  }

  get brokers(): string {
    return `127.0.0.1:${this.inst.port}`;
  }

  async start(): Promise<void> {
    // kafkaUp bounds its own wait (90 s); the extra margin covers a JVM that is slow to exit.
    await bounded('starting the chaos Kafka broker', 150_000, kafkaUp(this.inst));
    this.running = true;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.running = false;
    // kafkaDown waits up to 30 s, then SIGKILLs.
    await bounded('stopping the chaos Kafka broker', 60_000, kafkaDown(this.inst, signal));
  }
}

// The run's redis-server and PostgreSQL proxy are the test kit's (test/support): a redis-server that
// keeps nothing on disk (SIGKILL and start again loses every key), and a TCP proxy that can be cut
// (every connection dropped, new ones refused) and restored on the same port.
export { startOwnRedis, type OwnRedis } from '../test/support/redis-server.ts';
export { cuttableProxy, type CuttableProxy } from '../test/support/proxy.ts';

/** Deletes (soft, then permanently) the registry subjects the run's topics created. */
export async function deleteSubjects(registryUrl: string, topicPrefix: string): Promise<number> {
  const res = await fetch(`${registryUrl}/subjects`, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`registry answered HTTP ${res.status} to GET /subjects`);
  const subjects = ((await res.json()) as string[]).filter((s) => s.startsWith(topicPrefix));
  for (const subject of subjects) {
    const path = `${registryUrl}/subjects/${encodeURIComponent(subject)}`;
    await fetch(path, { method: 'DELETE', signal: AbortSignal.timeout(5_000) });
    await fetch(`${path}?permanent=true`, { method: 'DELETE', signal: AbortSignal.timeout(5_000) });
  }
  return subjects.length;
}

/**
 * A database of the run's own on the shared server (so other branches' migrations in the shared
 * database cannot stop the services from starting, and the checks see only this run's rows).
 */
export class OwnDatabase {
  readonly url: URL;
  private readonly admin: URL;
  readonly name: string;

  constructor(sharedUrl: string, name: string) {
    this.admin = new URL(sharedUrl);
    this.admin.pathname = '/postgres';
    this.url = new URL(sharedUrl);
    this.url.pathname = `/${name}`;
    this.name = name;
  }

  private async run(sql: string): Promise<void> {
    const client = new pg.Client({ connectionString: this.admin.toString(), connectionTimeoutMillis: 5_000 });
    await client.connect();
    try { await client.query(sql); } finally { await client.end(); }
  }

  create(): Promise<void> {
    return this.run(`CREATE DATABASE "${this.name}"`);
  }

  drop(): Promise<void> {
    return this.run(`DROP DATABASE IF EXISTS "${this.name}" WITH (FORCE)`);
  }

  /** The same database, reached through `port` on loopback (the cuttable proxy). */
  via(port: number): string {
    const url = new URL(this.url);
    url.hostname = '127.0.0.1';
    url.port = String(port);
    return url.toString();
  }
}
