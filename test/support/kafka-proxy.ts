// A TCP proxy in front of the Kafka broker for one process under test, which can hold a publish in
// flight or lose its acknowledgement while everything else (metadata, offsets, the other processes)
// goes on. It rewrites the broker's port in Metadata responses to its own, so every connection of the
// process comes through it, and it reads the Kafka framing (a 4-byte size, then apiKey, apiVersion and
// correlation id) to tell Produce requests (apiKey 0) from the rest.
import net from 'node:net';

const PRODUCE = 0;
const METADATA = 3;

export interface KafkaProxy {
  /** host:port to give the process as KAFKA_BROKERS. */
  readonly brokers: string;
  /**
   * While on, a connection that sends a Produce request holds it, and everything after it on that
   * connection, instead of forwarding: the publish is in flight.
   */
  hold(on: boolean): void;
  /** Forwards everything held, in order: the held publishes land now. */
  release(): void;
  /** While on, Produce requests reach the broker but their responses are swallowed. */
  dropProduceAcks(on: boolean): void;
  close(): Promise<void>;
}

/** Splits a byte stream into Kafka frames (size-prefixed). */
function framer(onFrame: (frame: Buffer) => void): (data: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (data) => {
    buf = buf.length === 0 ? data : Buffer.concat([buf, data]);
    while (buf.length >= 4 && buf.length >= 4 + buf.readInt32BE(0)) {
      const size = buf.readInt32BE(0);
      onFrame(buf.subarray(0, 4 + size));
      buf = buf.subarray(4 + size);
    }
  };
}

/** Metadata responses v0–v8 (kafkajs 2.2.4 uses up to v6): rewrites each broker's port. */
function rewriteMetadata(frame: Buffer, version: number, from: number, to: number): void {
  let at = 8; // size, correlation id
  if (version >= 3) at += 4; // throttle_time_ms
  const brokers = frame.readInt32BE(at);
  at += 4;
  for (let i = 0; i < brokers; i++) {
    at += 4; // node_id
    at += 2 + frame.readInt16BE(at); // host
    if (frame.readInt32BE(at) === from) frame.writeInt32BE(to, at);
    at += 4;
    if (version >= 1) {
      const rack = frame.readInt16BE(at);
      at += 2 + Math.max(0, rack);
    }
  }
}

export async function kafkaProxy(upstreamPort = 9092, upstreamHost = '127.0.0.1'): Promise<KafkaProxy> {
  let holding = false;
  let droppingAcks = false;
  const conns = new Set<{ client: net.Socket; upstream: net.Socket; held: Buffer[] | undefined }>();
  let port = 0;

  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, upstreamHost);
    const conn: { client: net.Socket; upstream: net.Socket; held: Buffer[] | undefined } = { client, upstream, held: undefined };
    conns.add(conn);
    const requests = new Map<number, { apiKey: number; apiVersion: number; dropAck: boolean }>();
    client.on('data', framer((frame) => {
      const apiKey = frame.readInt16BE(4);
      requests.set(frame.readInt32BE(8), { apiKey, apiVersion: frame.readInt16BE(6), dropAck: apiKey === PRODUCE && droppingAcks });
      if (!conn.held && holding && apiKey === PRODUCE) conn.held = [];
      if (conn.held) conn.held.push(Buffer.from(frame));
      else upstream.write(frame);
    }));
    upstream.on('data', framer((frame) => {
      const request = requests.get(frame.readInt32BE(4));
      requests.delete(frame.readInt32BE(4));
      if (request?.dropAck) return;
      if (request?.apiKey === METADATA) rewriteMetadata(frame, request.apiVersion, upstreamPort, port);
      client.write(frame);
    }));
    const drop = () => { client.destroy(); upstream.destroy(); conns.delete(conn); };
    client.on('error', drop); upstream.on('error', drop); client.on('close', drop); upstream.on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;

  return {
    brokers: `127.0.0.1:${port}`,
    hold(on) { holding = on; },
    release() {
      for (const conn of conns) {
        if (!conn.held) continue;
        for (const frame of conn.held) conn.upstream.write(frame);
        conn.held = undefined;
      }
    },
    dropProduceAcks(on) { droppingAcks = on; },
    close: () => new Promise<void>((resolve) => {
      for (const conn of conns) { conn.client.destroy(); conn.upstream.destroy(); }
      server.close(() => resolve());
    }),
  };
}
