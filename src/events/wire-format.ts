// The Confluent wire format for Protobuf values, exactly as Confluent's own serializers write it
// (docs/events.md):
//
//   byte 0        magic byte 0
//   bytes 1-4     schema id, big-endian
//   then          message-index array: zig-zag varint count, then one zig-zag varint per index
//                 (the path of the message inside its .proto file); the single byte 0 is the
//                 shortcut for [0], the first message in the file
//   then          the Protobuf payload
//
// We write this ourselves because the Protobuf encoder in @kafkajs/confluent-schema-registry leaves
// the message indexes out (its issue #152), and every other client would then read the payload from
// the wrong offset. Everything here is pure: no I/O, no registry.
import { fromBinary, type DescMessage } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, type DescriptorProto } from '@bufbuild/protobuf/wkt';
import { EventDecodeError } from './errors.ts';

const MAGIC_BYTE = 0;
const HEADER_BYTES = 5;
const MAX_SCHEMA_ID = 0x7fff_ffff; // Confluent ids are Java ints.
const MAX_INDEX = 0x7fff_ffff;
const MAX_VARINT_BYTES = 5; // enough for any 32-bit zig-zag value

export interface Frame {
  schemaId: number;
  messageIndexes: number[];
  payload: Uint8Array;
}

/** Frames `payload` for `schemaId` and the message at `messageIndexes` (see messageIndexesOf). */
export function encodeFrame(schemaId: number, messageIndexes: readonly number[], payload: Uint8Array): Buffer {
  if (!Number.isInteger(schemaId) || schemaId < 0 || schemaId > MAX_SCHEMA_ID) {
    throw new RangeError(`schema id must be an integer in [0, ${MAX_SCHEMA_ID}], got ${schemaId}`);
  }
  if (messageIndexes.length === 0 || messageIndexes.some((i) => !Number.isInteger(i) || i < 0 || i > MAX_INDEX)) {
    throw new RangeError(`message indexes must be a non-empty list of non-negative integers, got [${messageIndexes.join(', ')}]`);
  }
  const indexes = isFirstMessage(messageIndexes) ? [0] : [zigZag(messageIndexes.length), ...messageIndexes.map(zigZag)];
  const header: number[] = [MAGIC_BYTE, (schemaId >>> 24) & 0xff, (schemaId >>> 16) & 0xff, (schemaId >>> 8) & 0xff, schemaId & 0xff];
  for (const value of indexes) writeVarint(header, value);
  const frame = Buffer.allocUnsafe(header.length + payload.length);
  frame.set(header, 0);
  frame.set(payload, header.length);
  return frame;
}

/** Splits a framed value into its parts; throws EventDecodeError for anything malformed. */
export function decodeFrame(bytes: Uint8Array): Frame {
  if (bytes.length === 0) throw new EventDecodeError('TRUNCATED', 'the value is empty');
  if (bytes[0] !== MAGIC_BYTE) {
    throw new EventDecodeError('BAD_MAGIC', `byte 0 is ${bytes[0]}, expected the Confluent magic byte ${MAGIC_BYTE}`);
  }
  if (bytes.length < HEADER_BYTES) {
    throw new EventDecodeError('TRUNCATED', `the value has ${bytes.length} bytes, fewer than the ${HEADER_BYTES}-byte header`);
  }
  const schemaId = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(1);
  const reader = { bytes, pos: HEADER_BYTES, schemaId };
  const count = readZigZag(reader, 'message-index count');
  let messageIndexes: number[];
  if (count === 0) {
    messageIndexes = [0];
  } else {
    if (count < 0) throw new EventDecodeError('BAD_MESSAGE_INDEXES', `message-index count is ${count}`, { schemaId });
    // Each index takes at least one byte; a larger count can only be a cut-off or garbage frame.
    if (count > bytes.length - reader.pos) {
      throw new EventDecodeError('TRUNCATED', `message-index count ${count} exceeds the ${bytes.length - reader.pos} bytes left`, { schemaId });
    }
    messageIndexes = [];
    for (let i = 0; i < count; i++) {
      const index = readZigZag(reader, 'message index');
      if (index < 0) throw new EventDecodeError('BAD_MESSAGE_INDEXES', `message index ${index} is negative`, { schemaId });
      messageIndexes.push(index);
    }
  }
  return { schemaId, messageIndexes, payload: bytes.subarray(reader.pos) };
}

/**
 * The path of `desc` inside its .proto file: its index among the file's top-level messages, then
 * its index among each parent's nested messages. Map entries are not counted, as in Confluent's
 * serializers (they are not declared messages).
 */
export function messageIndexesOf(desc: DescMessage): number[] {
  const path: number[] = [];
  for (let current: DescMessage | undefined = desc; current !== undefined; current = current.parent) {
    const siblings = current.parent === undefined ? current.file.messages : current.parent.nestedMessages;
    const index = siblings.indexOf(current);
    if (index < 0) throw new Error(`${current.typeName} is not among the messages of ${current.file.proto.name}`);
    path.unshift(index);
  }
  return path;
}

/** The messages a registered Protobuf schema declares, in declaration order, with its package. */
export interface SchemaOutline {
  readonly packageName: string;
  readonly messages: readonly OutlineMessage[];
}

export interface OutlineMessage {
  readonly name: string;
  readonly nested: readonly OutlineMessage[];
}

/** The fully-qualified name of the message at `messageIndexes`, or undefined if there is none. */
export function typeNameAt(outline: SchemaOutline, messageIndexes: readonly number[]): string | undefined {
  const names: string[] = [];
  let level = outline.messages;
  for (const index of messageIndexes) {
    const message = level[index];
    if (message === undefined) return undefined;
    names.push(message.name);
    level = message.nested;
  }
  if (names.length === 0) return undefined;
  return outline.packageName === '' ? names.join('.') : `${outline.packageName}.${names.join('.')}`;
}

/**
 * Reads which messages a registered schema declares: enough to resolve a message-index array to a
 * type name, which is all a reader needs (it parses the payload with its own generated type).
 *
 * The schema is `.proto` text, as this project and Confluent's Java serializer register it; or a
 * base64 FileDescriptorProto, as Confluent's JS, Go, Python and .NET serializers register it, and
 * which Apicurio stores verbatim instead of converting it to text.
 */
export function outlineOf(schema: string): SchemaOutline {
  return outlineOfDescriptor(schema) ?? outlineOfText(schema);
}

function outlineOfDescriptor(schema: string): SchemaOutline | undefined {
  const trimmed = schema.trim();
  // .proto text always has spaces or punctuation that base64 cannot contain.
  if (trimmed.length === 0 || trimmed.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed)) return undefined;
  try {
    const file = fromBinary(FileDescriptorProtoSchema, Buffer.from(trimmed, 'base64'));
    const toOutline = (messages: DescriptorProto[]): OutlineMessage[] =>
      messages.filter((m) => m.options?.mapEntry !== true).map((m) => ({ name: m.name, nested: toOutline(m.nestedType) }));
    return { packageName: file.package, messages: toOutline(file.messageType) };
  } catch {
    return undefined;
  }
}

interface MutableOutlineMessage {
  name: string;
  nested: MutableOutlineMessage[];
}

type Scope =
  /** A message body: declarations inside it are its nested messages. */
  | { kind: 'message'; message: MutableOutlineMessage }
  /** A oneof or extend body: a proto2 group declared inside belongs to the enclosing message or file. */
  | { kind: 'transparent' }
  /** Anything else in braces (enum, service, rpc, option values): declares no messages. */
  | { kind: 'opaque' };

// Whitespace and comments (skipped), string literals, identifiers (dotted), and single characters.
const TOKEN = /\s+|\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|[A-Za-z_][\w.]*|[^\s]/g;

/**
 * A deliberately small scanner, not a full .proto parser: it tracks braces and picks out
 * `package`, `message Name {` and proto2 `group Name = N {` declarations, which is all that
 * message indexes depend on. Comments, strings and option values cannot fool it.
 */
function outlineOfText(text: string): SchemaOutline {
  const tokens = (text.match(TOKEN) ?? []).filter((t) => !/^\s/.test(t) && !t.startsWith('//') && !t.startsWith('/*'));
  const top: MutableOutlineMessage[] = [];
  const scopes: Scope[] = [];
  let packageName = '';
  let statementStart = 0;
  let bracketDepth = 0;

  const container = (): MutableOutlineMessage[] | undefined => {
    for (let i = scopes.length - 1; i >= 0; i--) {
      const scope = scopes[i]!;
      if (scope.kind === 'message') return scope.message.nested;
      if (scope.kind === 'opaque') return undefined;
    }
    return top;
  };
  const openMessage = (name: string) => {
    const message: MutableOutlineMessage = { name, nested: [] };
    container()?.push(message);
    scopes.push({ kind: 'message', message });
  };

  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const next = tokens[i + 1];
    const canDeclare = bracketDepth === 0 && container() !== undefined;
    if (token === '[') bracketDepth++;
    else if (token === ']') bracketDepth = Math.max(0, bracketDepth - 1);
    else if (canDeclare && i === statementStart && token === 'package' && scopes.length === 0 && next !== undefined) {
      packageName = next.replace(/^\./, '');
    } else if (canDeclare && i === statementStart && token === 'message' && isIdent(next) && tokens[i + 2] === '{') {
      openMessage(next);
      i += 2;
      statementStart = i + 1;
      continue;
    } else if (canDeclare && token === 'group' && isIdent(next) && tokens[i + 2] === '=') {
      // `[label] group Name = N [options] { ... }` declares a nested message; `group name = N;` is a
      // field whose type happens to be called "group".
      const brace = findGroupBody(tokens, i + 3);
      if (brace !== undefined) {
        openMessage(next);
        i = brace;
        statementStart = i + 1;
        continue;
      }
    } else if (token === '{') {
      const keyword = tokens[statementStart];
      scopes.push({ kind: bracketDepth === 0 && (keyword === 'oneof' || keyword === 'extend') ? 'transparent' : 'opaque' });
    } else if (token === '}') {
      scopes.pop();
    }
    if (bracketDepth === 0 && (token === ';' || token === '{' || token === '}')) statementStart = i + 1;
  }
  return { packageName, messages: top };
}

function findGroupBody(tokens: string[], from: number): number | undefined {
  let depth = 0;
  for (let i = from; i < tokens.length; i++) {
    const token = tokens[i];
    if (token === '[') depth++;
    else if (token === ']') depth--;
    else if (depth === 0 && token === ';') return undefined;
    else if (depth === 0 && token === '{') return i;
  }
  return undefined;
}

function isIdent(token: string | undefined): token is string {
  return token !== undefined && /^[A-Za-z_]\w*$/.test(token);
}

function isFirstMessage(messageIndexes: readonly number[]): boolean {
  return messageIndexes.length === 1 && messageIndexes[0] === 0;
}

// Only non-negative values are ever written, so zig-zag is a doubling.
function zigZag(value: number): number {
  return value * 2;
}

function writeVarint(out: number[], value: number): void {
  let rest = value;
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
}

function readZigZag(reader: { bytes: Uint8Array; pos: number; schemaId: number }, what: string): number {
  let value = 0;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    const byte = reader.bytes[reader.pos];
    if (byte === undefined) {
      throw new EventDecodeError('TRUNCATED', `the value ends inside the ${what}`, { schemaId: reader.schemaId });
    }
    reader.pos++;
    value += (byte & 0x7f) * 0x80 ** i;
    if ((byte & 0x80) === 0) {
      const decoded = value % 2 === 0 ? value / 2 : -(value + 1) / 2;
      if (decoded > MAX_INDEX) {
        throw new EventDecodeError('BAD_MESSAGE_INDEXES', `the ${what} ${decoded} is out of range`, { schemaId: reader.schemaId });
      }
      return decoded;
    }
  }
  throw new EventDecodeError('BAD_MESSAGE_INDEXES', `the ${what} is longer than a 32-bit varint`, { schemaId: reader.schemaId });
}
