// The chaos run's own infrastructure, so its faults never touch the shared stack: its own Kafka
// broker (scripts/stack.ts with an instance of its own), its own redis-server (no persistence, so
// a restart loses everything), and its own database on the shared PostgreSQL server, reached
// through a TCP proxy that can be cut. Only the schema registry is shared; the run's subjects carry
// its unique topic prefix and are deleted at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { kafkaDown, kafkaUp, type KafkaInstance } from '../scripts/stack.ts';
import { bounded, pollUntil, sleep } from './journal.ts';

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

function redisAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const done = (ok: boolean) => { socket.destroy(); resolve(ok); };
    socket.setTimeout(1_000);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (d: Buffer) => done(d.toString().startsWith('+PONG')));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

/** A redis-server that keeps nothing on disk: SIGKILL and start again loses every key. */
export class OwnRedis {
  readonly port: number;
  private readonly dir: string;
  private child: ChildProcess | undefined;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.dir = dir;
  }

  static async create(dir: string): Promise<OwnRedis> {
    return new OwnRedis(await freePort(), dir);
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  async start(): Promise<void> {
    const child = spawn('redis-server', [
      '--port', String(this.port), '--bind', '127.0.0.1', '--daemonize', 'no',
      '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction',
      '--dir', this.dir, '--logfile', join(this.dir, 'redis.log'),
    ], { stdio: 'ignore' });
    this.child = child;
    child.once('exit', () => { if (this.child === child) this.child = undefined; });
    if (!(await pollUntil(20_000, 100, () => redisAnswers(this.port)))) {
      throw new Error(`redis-server on port ${this.port} did not answer PING within 20 s`);
    }
  }

  /** SIGKILL: whatever the server held is gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await bounded('redis-server to exit', 10_000, exited);
    }
  }
}

/**
 * A TCP proxy in front of PostgreSQL. `cut` drops every connection and refuses new ones (what a
 * crashed or partitioned database looks like to a client); `restore` listens on the same port again.
 */
export class CuttableProxy {
  readonly port: number;
  private readonly target: { host: string; port: number };
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();

  private constructor(port: number, target: { host: string; port: number }) {
    this.port = port;
    this.target = target;
  }

  static async create(target: { host: string; port: number }): Promise<CuttableProxy> {
    const proxy = new CuttableProxy(await freePort(), target);
    await proxy.restore();
    return proxy;
  }

  get open(): boolean {
    return this.server !== undefined;
  }

  async restore(): Promise<void> {
    if (this.server) return;
    // The port was free a moment ago; another process may grab it between a cut and a restore.
    for (let attempt = 1; ; attempt++) {
      try {
        this.server = await this.listen();
        return;
      } catch (err) {
        if (attempt >= 50) throw new Error(`the PostgreSQL proxy could not listen on ${this.port} again: ${(err as Error).message}`, { cause: err });
        await sleep(200);
      }
    }
  }

  private listen(): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const server = net.createServer((client) => {
        const upstream = net.connect(this.target.port, this.target.host);
        this.sockets.add(client);
        this.sockets.add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          this.sockets.delete(client);
          this.sockets.delete(upstream);
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
        client.pipe(upstream).pipe(client);
      });
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        server.on('error', () => undefined);
        resolve(server);
      });
    });
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

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
