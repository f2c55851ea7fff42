// The one way the project turns event messages into Kafka values and back (docs/events.md#registry):
// - producers call `forTopic` once at start: it sets the subject's compatibility level, registers
//   (or finds) the schema, and refuses to start on an incompatible change;
// - consumers call `decoderFor`: they never register, and read every version ever registered.
//
// All registry HTTP goes through @kafkajs/confluent-schema-registry's API client (its routes, retry
// and error handling), but not through its SchemaRegistry class, because for Protobuf that class:
// - encodes without message indexes (upstream issue #152), so the framing is in wire-format.ts;
// - returns a protobufjs object for the file's first message from getSchema(id), not the schema
//   text, so a reader cannot resolve message indexes from it;
// - parses schemas on register() with protobufjs and looks up the file's first declaration, which
//   fails when that is an enum, and sets compatibility only after a subject's first version.
// The client is the library's own, reached through its dist path (not a public export): the tests
// in test/events exercise it, so run them when upgrading the library.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromBinary, toBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { EventDecodeError, SchemaIncompatibleError, SchemaRegistryError } from './errors.ts';
import { decodeFrame, encodeFrame, messageIndexesOf, outlineOf, typeNameAt, type SchemaOutline } from './wire-format.ts';

export { EventDecodeError, SchemaIncompatibleError, SchemaRegistryError } from './errors.ts';
export type { EventDecodeReason } from './errors.ts';

/** Levels that keep every registered version readable by new consumers (BACKWARD or stricter). */
export type Compatibility = 'BACKWARD' | 'BACKWARD_TRANSITIVE' | 'FULL' | 'FULL_TRANSITIVE';

export interface EventRegistryOptions {
  /** The registry's Confluent-compatible API, e.g. http://127.0.0.1:8081/apis/ccompat/v7. */
  url: string;
  /** Set on every subject this registry registers to, each time a producer starts. */
  compatibility: Compatibility;
  /** Where the .proto sources live; the schema text registered is the file itself. Default: <repo>/proto. */
  protoRoot?: string;
  /** How long one registry request may take before it fails with SchemaRegistryError. Default: 10 s. */
  requestTimeoutMs?: number;
}

/** Reads values of one message type, written with any registered version of its schema. */
export interface EventDecoder<Desc extends DescMessage> {
  readonly schema: Desc;
  /** Throws EventDecodeError for a bad record, SchemaRegistryError when the registry cannot answer. */
  decode(bytes: Uint8Array): Promise<MessageShape<Desc>>;
}

/** Writes and reads values of one message type on one topic. */
export interface EventCodec<Desc extends DescMessage> extends EventDecoder<Desc> {
  readonly topic: string;
  /** `<topic>-value` (TopicNameStrategy). */
  readonly subject: string;
  /** The registered id written into every value. */
  readonly schemaId: number;
  /** The message's path in its .proto file, written after the schema id. */
  readonly messageIndexes: readonly number[];
  encode(message: MessageShape<Desc>): Buffer;
}

const DEFAULT_PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
// The library sets no timeout, so a registry that accepts connections but never answers would hang
// a producer's start or a consumer's batch forever.
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const CLIENT_ID = 'coupon-events';
// Unknown ids are remembered so a stream of poison records costs one lookup per id, not per record;
// bounded, because the ids in poison records are arbitrary.
const MAX_REMEMBERED_UNKNOWN_IDS = 10_000;

/** A schema as stored under an id: only what a reader needs to check the message type. */
interface WriterSchema {
  schemaType: string;
  outline: SchemaOutline;
}

// The library types every route as `(_: any) => any`; this is the part we use, typed.
interface RegistryResponse {
  data(): unknown;
}
type Route = (params: Record<string, unknown>) => Promise<RegistryResponse>;
interface RegistryApi {
  Schema: { find: Route };
  Subject: { register: Route; updateConfig: Route };
}
// Loaded with require: Node's ESM loader and vitest's disagree on a CommonJS module's default export.
const { default: createRegistryApi } = createRequire(import.meta.url)('@kafkajs/confluent-schema-registry/dist/api/index.js') as {
  default: (args: { host: string; clientId?: string; middlewares?: unknown[] }) => RegistryApi;
};
// A mappersmith middleware, the library's extension point for requests.
const requestTimeout = (timeout: number) => () => ({
  request: (request: { enhance(extras: { timeout: number }): unknown }) => request.enhance({ timeout }),
});

export class EventRegistry {
  readonly #api: RegistryApi;
  readonly #compatibility: Compatibility;
  readonly #protoRoot: string;
  readonly #writers = new Map<number, Promise<WriterSchema | undefined>>();
  readonly #unknownIds = new Set<number>();

  constructor(opts: EventRegistryOptions) {
    this.#api = createRegistryApi({
      host: opts.url.replace(/\/+$/, ''),
      clientId: CLIENT_ID,
      middlewares: [requestTimeout(opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS)],
    });
    this.#compatibility = opts.compatibility;
    this.#protoRoot = opts.protoRoot ?? DEFAULT_PROTO_ROOT;
  }

  /**
   * For a producer, at start: sets `<topic>-value`'s compatibility level, then registers the .proto
   * file that declares `schema` (or gets the id of the identical version already registered).
   * Throws SchemaIncompatibleError if the registry refuses the change; the producer must not start.
   */
  async forTopic<Desc extends DescMessage>(topic: string, schema: Desc): Promise<EventCodec<Desc>> {
    const subject = `${topic}-value`;
    const file = schema.file.proto.name;
    const text = await this.#readProto(file);
    const outline = outlineOf(text);
    const messageIndexes = messageIndexesOf(schema);
    if (typeNameAt(outline, messageIndexes) !== schema.typeName) {
      throw new Error(
        `${path.join(this.#protoRoot, file)} does not declare ${schema.typeName} at message index ` +
          `[${messageIndexes.join(', ')}] as the generated code does: regenerate gen/ (npm run generate)`,
      );
    }
    // Registering a schema that imports other project files would need schema references, which
    // other teams' clients resolve by subject; the well-known types need none.
    const imports = schema.file.dependencies.map((d) => d.proto.name).filter((name) => !name.startsWith('google/protobuf/'));
    if (imports.length > 0) {
      throw new Error(`${file} imports ${imports.join(', ')}: schema references are not supported; keep event files self-contained`);
    }

    await this.#setCompatibility(subject);
    const schemaId = await this.#register(subject, file, text);
    // The registry just told us which text has this id; no need to fetch it back to decode.
    this.#writers.set(schemaId, Promise.resolve({ schemaType: 'PROTOBUF', outline }));

    const decoder = this.decoderFor(schema);
    return {
      topic,
      subject,
      schemaId,
      messageIndexes,
      schema,
      decode: (bytes) => decoder.decode(bytes),
      encode(message) {
        if (message.$typeName !== schema.typeName) {
          throw new TypeError(`codec for ${subject} encodes ${schema.typeName}, got ${message.$typeName}`);
        }
        return encodeFrame(schemaId, messageIndexes, toBinary(schema, message));
      },
    };
  }

  /**
   * For a consumer: decodes values of `schema`'s type written with any schema version registered
   * under any subject. Registers nothing. Each writer schema id is fetched once, then cached.
   */
  decoderFor<Desc extends DescMessage>(schema: Desc): EventDecoder<Desc> {
    return {
      schema,
      decode: async (bytes) => {
        const { schemaId, messageIndexes, payload } = decodeFrame(bytes);
        const writer = await this.#writerSchema(schemaId);
        if (writer === undefined) {
          throw new EventDecodeError('UNKNOWN_SCHEMA_ID', `the registry has no schema with id ${schemaId}`, { schemaId });
        }
        if (writer.schemaType !== 'PROTOBUF') {
          throw new EventDecodeError('WRONG_MESSAGE_TYPE', `schema ${schemaId} is ${writer.schemaType}, not PROTOBUF`, { schemaId });
        }
        const writerType = typeNameAt(writer.outline, messageIndexes);
        if (writerType === undefined) {
          throw new EventDecodeError('BAD_MESSAGE_INDEXES', `schema ${schemaId} has no message at [${messageIndexes.join(', ')}]`, { schemaId });
        }
        // Reading across versions relies on Protobuf's wire compatibility (which the subject's
        // compatibility level guarantees); reading a different message type would not be caught by it.
        if (writerType !== schema.typeName) {
          throw new EventDecodeError('WRONG_MESSAGE_TYPE', `the value is a ${writerType} (schema ${schemaId}), expected ${schema.typeName}`, { schemaId });
        }
        try {
          return fromBinary(schema, payload);
        } catch (err) {
          throw new EventDecodeError('BAD_PAYLOAD', `the payload is not a valid ${schema.typeName}: ${messageOf(err)}`, { schemaId, cause: err });
        }
      },
    };
  }

  async #readProto(file: string): Promise<string> {
    const fullPath = path.join(this.#protoRoot, file);
    try {
      return await readFile(fullPath, 'utf8');
    } catch (err) {
      throw new Error(`cannot read the schema source ${fullPath}: ${messageOf(err)}`, { cause: err });
    }
  }

  async #setCompatibility(subject: string): Promise<void> {
    let answer: unknown;
    for (let attempt = 1; ; attempt++) {
      try {
        answer = (await this.#api.Subject.updateConfig({ subject, body: { compatibility: this.#compatibility } })).data();
        break;
      } catch (err) {
        // Two producers starting at once (coupon-api's workers) both create the subject's rule;
        // Apicurio answers the loser 409 "rule already exists". Setting it again updates it.
        if (statusOf(err) === 409 && attempt < 5) {
          await new Promise((r) => setTimeout(r, 50 * attempt));
          continue;
        }
        throw registryError(`setting compatibility ${this.#compatibility} on ${subject}`, err);
      }
    }
    const level = (answer as { compatibility?: unknown; compatibilityLevel?: unknown } | undefined) ?? {};
    const applied = level.compatibility ?? level.compatibilityLevel;
    if (applied !== this.#compatibility) {
      throw new SchemaRegistryError(`the registry answered ${JSON.stringify(answer)} when setting ${subject} to ${this.#compatibility}`);
    }
  }

  async #register(subject: string, file: string, text: string): Promise<number> {
    let answer: unknown;
    for (let attempt = 1; ; attempt++) {
      try {
        answer = (await this.#api.Subject.register({ subject, body: { schemaType: 'PROTOBUF', schema: text } })).data();
        break;
      } catch (err) {
        // A 409 may be a concurrent first registration of the same text by another process;
        // asked again, identical text gets its id. An incompatible schema stays 409.
        if (statusOf(err) === 409 && attempt < 3) {
          await new Promise((r) => setTimeout(r, 100 * attempt));
          continue;
        }
        if (statusOf(err) === 409) throw new SchemaIncompatibleError(subject, this.#compatibility, registryMessageOf(err), file);
        throw registryError(`registering ${file} under ${subject}`, err);
      }
    }
    const id = (answer as { id?: unknown } | undefined)?.id;
    if (typeof id !== 'number') throw new SchemaRegistryError(`the registry answered ${JSON.stringify(answer)} when registering ${subject}`);
    return id;
  }

  async #writerSchema(id: number): Promise<WriterSchema | undefined> {
    if (this.#unknownIds.has(id)) return undefined;
    let pending = this.#writers.get(id);
    if (pending === undefined) {
      pending = this.#fetchWriterSchema(id);
      this.#writers.set(id, pending);
    }
    let writer: WriterSchema | undefined;
    try {
      writer = await pending;
    } catch (err) {
      // A registry outage is not remembered: the next record asks again.
      if (this.#writers.get(id) === pending) this.#writers.delete(id);
      throw err;
    }
    if (writer === undefined && this.#writers.get(id) === pending) {
      this.#writers.delete(id);
      this.#unknownIds.add(id);
      if (this.#unknownIds.size > MAX_REMEMBERED_UNKNOWN_IDS) {
        const oldest = this.#unknownIds.values().next().value;
        if (oldest !== undefined) this.#unknownIds.delete(oldest);
      }
    }
    return writer;
  }

  async #fetchWriterSchema(id: number): Promise<WriterSchema | undefined> {
    let answer: unknown;
    try {
      answer = (await this.#api.Schema.find({ id })).data();
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw registryError(`fetching schema ${id}`, err);
    }
    const { schema, schemaType } = (answer ?? {}) as { schema?: unknown; schemaType?: unknown };
    if (typeof schema !== 'string') throw new SchemaRegistryError(`the registry answered ${JSON.stringify(answer)} for schema ${id}`);
    // The Confluent API omits schemaType for Avro, its original and default type.
    const type = typeof schemaType === 'string' ? schemaType.toUpperCase() : 'AVRO';
    return { schemaType: type, outline: type === 'PROTOBUF' ? outlineOf(schema) : { packageName: '', messages: [] } };
  }
}

function statusOf(err: unknown): number | undefined {
  const status = (err as { status?: unknown } | null)?.status;
  return typeof status === 'number' ? status : undefined;
}

// The library's errors read "<clientId> - <the registry's message>".
function registryMessageOf(err: unknown): string {
  return messageOf(err).replace(`${CLIENT_ID} - `, '');
}

function registryError(action: string, err: unknown): SchemaRegistryError {
  // The library reports connection failures as status 400 with the socket error as the message.
  const status = statusOf(err);
  return new SchemaRegistryError(`schema registry error while ${action}: ${registryMessageOf(err)}`, { cause: err, ...(status === undefined ? {} : { status }) });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
