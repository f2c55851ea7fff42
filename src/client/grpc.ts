// A small typed @grpc/grpc-js client for any service in gen/ (CouponService for the payment
// service, Health for probes). Errors come back as CouponCallError with the gRPC code and the
// coupon.v1.ErrorDetail reason, so callers branch on `err.reason` instead of parsing messages.
import * as grpc from '@grpc/grpc-js';
import { fromBinary, toBinary, type DescMessage, type DescService, type MessageInitShape, type MessageShape, create } from '@bufbuild/protobuf';
import { findTrailerError } from '@connectrpc/connect/protocol-grpc';
import { ErrorDetailSchema, type ErrorDetail } from '../../gen/coupon/v1/error_pb.js';

type UnaryMethods<S extends DescService> = {
  [K in keyof S['method'] as S['method'][K] extends { methodKind: 'unary' } ? K : never]:
    S['method'][K] extends { input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? (request: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>
      : never;
};

export interface CallOptions {
  /** Milliseconds until the call is abandoned with DEADLINE_EXCEEDED. Default 5,000. */
  timeoutMs?: number;
  metadata?: Record<string, string>;
}

/** A failed call: the gRPC status code and, for CouponService errors, the machine-readable reason. */
export class CouponCallError extends Error {
  override name = 'CouponCallError';
  readonly code: grpc.status;
  readonly reason: string;
  readonly field: string;
  readonly detail: ErrorDetail | undefined;
  constructor(code: grpc.status, message: string, detail: ErrorDetail | undefined) {
    super(message);
    this.code = code;
    this.detail = detail;
    this.reason = detail?.reason ?? '';
    this.field = detail?.field ?? '';
  }
}

export type GrpcClient<S extends DescService> = UnaryMethods<S> & { close(): void; readonly raw: grpc.Client };

/** Gives the bearer token for each call (a JWT naming the caller and its roles); may refresh it. */
export type TokenProvider = () => string | Promise<string>;

export interface ClientOptions {
  channelOptions?: grpc.ChannelOptions;
  credentials?: grpc.ChannelCredentials;
  /** Sent as `Authorization: Bearer <token>` on every call. */
  token?: TokenProvider;
}

/** `address` is host:port, for example 127.0.0.1:8080. */
export function createGrpcClient<S extends DescService>(service: S, address: string, options: ClientOptions = {}): GrpcClient<S> {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: (m: unknown) => Buffer.from(toBinary(method.input, m as MessageShape<DescMessage>)),
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      responseSerialize: (m: unknown) => Buffer.from(toBinary(method.output, m as MessageShape<DescMessage>)),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
      originalName: method.localName,
    };
  }
  const Ctor = grpc.makeGenericClientConstructor(definition, service.typeName);
  const raw = new Ctor(address, options.credentials ?? grpc.credentials.createInsecure(), options.channelOptions ?? {});
  const client: Record<string, unknown> = { close: () => raw.close(), raw };
  for (const method of service.methods) {
    if (method.methodKind !== 'unary') continue;
    client[method.localName] = async (init: MessageInitShape<DescMessage>, opts: CallOptions = {}) => {
      const token = options.token ? await options.token() : undefined;
      return new Promise((resolve, reject) => {
        const metadata = new grpc.Metadata();
        if (token) metadata.set('authorization', `Bearer ${token}`);
        for (const [k, v] of Object.entries(opts.metadata ?? {})) metadata.set(k, v);
        const deadline = new Date(Date.now() + (opts.timeoutMs ?? 5_000));
        const call = raw[method.localName] as (req: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
        call.call(raw, create(method.input, init), metadata, { deadline }, (err, res) => {
          if (err) reject(toCallError(err));
          else resolve(res);
        });
      });
    };
  }
  return client as GrpcClient<S>;
}

function toCallError(err: grpc.ServiceError): CouponCallError {
  const headers = new Headers();
  for (const [key, value] of Object.entries(err.metadata?.getMap() ?? {})) {
    headers.set(key, Buffer.isBuffer(value) ? value.toString('base64') : String(value));
  }
  headers.set('grpc-status', String(err.code));
  headers.set('grpc-message', encodeURIComponent(err.details ?? ''));
  const parsed = findTrailerError(headers);
  const detail = parsed?.findDetails(ErrorDetailSchema)[0];
  return new CouponCallError(err.code, err.details || err.message, detail);
}
