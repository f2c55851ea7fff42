// grpc.health.v1.Health (Check, Watch, List). The overall status ("") and each service this server
// serves are SERVING only while every dependency answers its probe (ops/dependencies.ts). Check
// reads the monitor's cached result, so health checks never pile load onto the dependencies.
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { Health, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus as Status } from '../../gen/health/v1/health_pb.js';
import type { DependencyMonitor } from '../ops/dependencies.ts';

/** What Health answers for `service`: undefined for a service this server does not serve. */
export function healthStatus(monitor: DependencyMonitor, services: readonly string[], service: string): Status | undefined {
  if (service !== '' && !services.includes(service)) return undefined;
  return monitor.allUp ? Status.SERVING : Status.NOT_SERVING;
}

export function healthRoutes(router: ConnectRouter, monitor: DependencyMonitor, services: readonly string[]): void {
  const response = (status: Status) => create(HealthCheckResponseSchema, { status });
  const status = (service: string) => healthStatus(monitor, services, service);
  router.service(Health, {
    check(request) {
      const s = status(request.service);
      if (s === undefined) throw new ConnectError(`unknown service ${request.service}`, Code.NotFound);
      return response(s);
    },
    async *watch(request, context) {
      let last = status(request.service) ?? Status.SERVICE_UNKNOWN;
      yield response(last);
      for await (const _ of monitor.changes(context.signal)) {
        const next = status(request.service) ?? Status.SERVICE_UNKNOWN;
        if (next !== last) yield response((last = next));
      }
    },
    list() {
      return { statuses: Object.fromEntries(['', ...services].map((s) => [s, response(status(s) ?? Status.SERVICE_UNKNOWN)])) };
    },
  });
}
