// gRPC server reflection, v1 and v1alpha, served from the generated file descriptors, so grpcurl and
// `buf curl` work with no .proto files at hand. connect-es has no built-in reflection (its issue #507).
import { create, createRegistry, fromBinary, toBinary, type DescFile, type Registry } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import type { ConnectRouter } from '@connectrpc/connect';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import * as v1 from '../../gen/grpc/reflection/v1/reflection_pb.js';
import * as v1alpha from '../../gen/grpc/reflection/v1alpha/reflection_pb.js';

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;
type ResponseBody = v1.ServerReflectionResponse['messageResponse'];

/** Answers one reflection request from the registry of the services this server exposes. */
export class ReflectionIndex {
  private readonly registry: Registry;
  private readonly files = new Map<string, DescFile>();
  private readonly serviceNames: string[];

  /** `extraFiles`: files no service imports but callers need, such as the error detail types. */
  constructor(services: GenService<GenServiceMethods>[], extraFiles: DescFile[] = []) {
    this.serviceNames = services.map((s) => s.typeName);
    const collect = (f: DescFile) => {
      if (this.files.has(f.name)) return;
      this.files.set(f.name, f);
      f.dependencies.forEach(collect);
    };
    services.forEach((s) => collect(s.file));
    extraFiles.forEach(collect);
    this.registry = createRegistry(...this.files.values());
  }

  answer(request: Request): ResponseBody {
    const req = request.messageRequest;
    switch (req.case) {
      case 'listServices':
        return { case: 'listServicesResponse', value: { $typeName: 'grpc.reflection.v1.ListServiceResponse', service: this.serviceNames.map((name) => ({ $typeName: 'grpc.reflection.v1.ServiceResponse', name })) } };
      case 'fileByFilename': {
        const file = this.files.get(req.value);
        return file ? this.withDependencies(file) : notFound(`file not found: ${req.value}`);
      }
      case 'fileContainingSymbol': {
        const file = this.fileOfSymbol(req.value);
        return file ? this.withDependencies(file) : notFound(`symbol not found: ${req.value}`);
      }
      case 'fileContainingExtension':
        return notFound(`extension not found: ${req.value.containingType} ${req.value.extensionNumber}`);
      case 'allExtensionNumbersOfType': {
        const message = this.registry.getMessage(req.value);
        if (!message) return notFound(`type not found: ${req.value}`);
        return { case: 'allExtensionNumbersResponse', value: { $typeName: 'grpc.reflection.v1.ExtensionNumberResponse', baseTypeName: req.value, extensionNumber: [] } };
      }
      default:
        return { case: 'errorResponse', value: { $typeName: 'grpc.reflection.v1.ErrorResponse', errorCode: 3, errorMessage: 'no request set' } };
    }
  }

  private fileOfSymbol(symbol: string): DescFile | undefined {
    const name = symbol.startsWith('.') ? symbol.slice(1) : symbol;
    const direct = this.registry.get(name);
    if (direct) return direct.file;
    // A method or a field: look up its parent.
    const parent = name.slice(0, Math.max(0, name.lastIndexOf('.')));
    const owner = this.registry.get(parent);
    if (owner?.kind === 'service' && owner.methods.some((m) => m.name === name.slice(parent.length + 1))) return owner.file;
    if (owner?.kind === 'message' && owner.fields.some((f) => f.name === name.slice(parent.length + 1))) return owner.file;
    return undefined;
  }

  /** The file and its transitive dependencies, as grpcurl and buf curl expect. */
  private withDependencies(file: DescFile): ResponseBody {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(visit);
    };
    visit(file);
    return { case: 'fileDescriptorResponse', value: { $typeName: 'grpc.reflection.v1.FileDescriptorResponse', fileDescriptorProto: out } };
  }
}

function notFound(message: string): ResponseBody {
  return { case: 'errorResponse', value: { $typeName: 'grpc.reflection.v1.ErrorResponse', errorCode: 5, errorMessage: message } };
}

/** Registers both reflection versions; `services` are the services the server exposes. */
export function reflectionRoutes(router: ConnectRouter, services: GenService<GenServiceMethods>[], extraFiles: DescFile[] = []): void {
  const index = new ReflectionIndex([...services, v1.ServerReflection, v1alpha.ServerReflection], extraFiles);
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield create(v1.ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse: index.answer(request) });
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        // v1alpha's messages are v1's under another package: same fields, same numbers.
        const body = index.answer(request);
        const bytes = toBinary(v1.ServerReflectionResponseSchema, create(v1.ServerReflectionResponseSchema, { validHost: request.host, messageResponse: body }));
        const response = fromBinaryAlpha(bytes);
        response.originalRequest = request;
        yield response;
      }
    },
  });
}

const fromBinaryAlpha = (bytes: Uint8Array) => fromBinary(v1alpha.ServerReflectionResponseSchema, bytes);
