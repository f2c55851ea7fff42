// The events module's failures, split by what the caller should do about them (docs/events.md#registry):
// - EventDecodeError: the record itself is bad. Retrying cannot help; route it to the dead-letter
//   topic with `reason`.
// - SchemaIncompatibleError: the registry refused a producer's schema. The producer must not start.
// - SchemaRegistryError: the registry did not answer (down, timeout, 5xx). Not the record's fault;
//   retry, and never dead-letter a record because of it.

/** Why a record could not be decoded; stable, machine-readable, and safe to put in a DLT header. */
export type EventDecodeReason =
  /** Byte 0 is not the Confluent magic byte 0. */
  | 'BAD_MAGIC'
  /** The bytes end inside the header (magic, schema id or message indexes). */
  | 'TRUNCATED'
  /** The message-index array is malformed, or names no message in the writer schema. */
  | 'BAD_MESSAGE_INDEXES'
  /** The registry does not know the schema id. */
  | 'UNKNOWN_SCHEMA_ID'
  /** The writer schema's message is not the reader's type (or the schema is not Protobuf). */
  | 'WRONG_MESSAGE_TYPE'
  /** The payload is not valid Protobuf binary for the reader's type. */
  | 'BAD_PAYLOAD';

export class EventDecodeError extends Error {
  override name = 'EventDecodeError';
  readonly reason: EventDecodeReason;
  /** The schema id from the frame, when the frame got that far. */
  readonly schemaId: number | undefined;

  constructor(reason: EventDecodeReason, message: string, options: { schemaId?: number; cause?: unknown } = {}) {
    super(`${reason}: ${message}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.schemaId = options.schemaId;
  }
}

export class SchemaIncompatibleError extends Error {
  override name = 'SchemaIncompatibleError';
  readonly subject: string;
  readonly compatibility: string;
  /** The registry's own explanation, e.g. which field changed type. */
  readonly registryMessage: string;

  constructor(subject: string, compatibility: string, registryMessage: string, file: string) {
    super(
      `schema registry refused ${file} for subject ${subject}: it is not ${compatibility} compatible ` +
        `with the registered versions (${registryMessage}). Make the change compatible (add fields, ` +
        `never change or reuse a field's number or type), or publish a new versioned package and topic.`,
    );
    this.subject = subject;
    this.compatibility = compatibility;
    this.registryMessage = registryMessage;
  }
}

export class SchemaRegistryError extends Error {
  override name = 'SchemaRegistryError';
  /** The HTTP status the registry client reported; it reports a connection failure as 400. */
  readonly status: number | undefined;

  constructor(message: string, options: { status?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status;
  }
}
