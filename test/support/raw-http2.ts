// A bare TCP client that speaks just enough HTTP/2 to misbehave the way hostile clients do: it writes
// frames itself, never answers the server, and keeps going after a GOAWAY. node:http2's own client
// would stop at the GOAWAY, which hides whether the server really ends the connection.
import net from 'node:net';
import { once } from 'node:events';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7 } as const;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const CANCEL = 0x8;

function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/** HPACK string literal, no Huffman coding (every value here is shorter than 127 bytes). */
function literal(s: string): Buffer {
  return Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]);
}

/** A gRPC POST header block: static-table entries and literals without indexing, so it never changes HPACK state. */
function grpcRequestHeaders(authority: string, path: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http
    Buffer.from([0x04]), literal(path), // :path
    Buffer.from([0x01]), literal(authority), // :authority
    Buffer.from([0x0f, 0x10]), literal('application/grpc'), // content-type (static index 31)
    Buffer.from([0x00]), literal('te'), literal('trailers'),
  ]);
}

export class RawHttp2Client {
  /** The server's GOAWAY, if one arrived. */
  goaway: { lastStreamId: number; errorCode: number } | undefined;
  /** Resolves when the TCP connection is gone, whoever ended it. */
  readonly closed: Promise<void>;
  private nextStreamId = 1;
  private inbox = Buffer.alloc(0);
  private readonly requestHeaders: Buffer;
  readonly socket: net.Socket;

  private constructor(socket: net.Socket, port: number, path: string) {
    this.socket = socket;
    this.requestHeaders = grpcRequestHeaders(`127.0.0.1:${port}`, path);
    socket.on('error', () => { /* the server hanging up on us is the point */ });
    socket.on('data', (chunk: Buffer) => this.read(chunk));
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Connects, sends the preface and an empty SETTINGS frame (and, optionally, acknowledges the server's). */
  static async connect(port: number, path = '/grpc.health.v1.Health/Check'): Promise<RawHttp2Client> {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const client = new RawHttp2Client(socket, port, path);
    socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), frame(FRAME.SETTINGS, 0x1, 0)]));
    return client;
  }

  get isClosed(): boolean { return this.socket.destroyed; }

  /** HEADERS for a new gRPC call, then RST_STREAM(CANCEL) at once: one round of the rapid-reset attack. */
  openAndCancel(): Buffer {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const code = Buffer.alloc(4);
    code.writeUInt32BE(CANCEL);
    return Buffer.concat([frame(FRAME.HEADERS, END_HEADERS, id, this.requestHeaders), frame(FRAME.RST_STREAM, 0, id, code)]);
  }

  ping(): void {
    if (!this.isClosed) this.socket.write(frame(FRAME.PING, 0, 0, Buffer.alloc(8)));
  }

  /** A complete gRPC call with an empty request message. */
  call(): void {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    this.socket.write(Buffer.concat([
      frame(FRAME.HEADERS, END_HEADERS, id, this.requestHeaders),
      frame(FRAME.DATA, END_STREAM, id, Buffer.alloc(5)),
    ]));
  }

  /** Writes `bytes`, resolving once the socket can take more (or is gone). */
  async write(bytes: Buffer): Promise<void> {
    if (this.isClosed) return;
    if (!this.socket.write(bytes)) await Promise.race([new Promise((resolve) => this.socket.once('drain', resolve)), this.closed]);
  }

  private read(chunk: Buffer): void {
    this.inbox = Buffer.concat([this.inbox, chunk]);
    while (this.inbox.length >= 9) {
      const length = this.inbox.readUIntBE(0, 3);
      if (this.inbox.length < 9 + length) return;
      if (this.inbox[3] === FRAME.GOAWAY && this.goaway === undefined) {
        this.goaway = { lastStreamId: this.inbox.readUInt32BE(9) & 0x7fffffff, errorCode: this.inbox.readUInt32BE(13) };
      }
      this.inbox = this.inbox.subarray(9 + length);
    }
  }
}
