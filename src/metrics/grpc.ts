// coupon-api's per-call metrics, named and labelled as go-grpc-prometheus does (server/grpc-metrics.ts fills them).
import { boundByValue } from './bound.ts';
import { counter, histogram } from './registry.ts';

const grpcLabels = ['grpc_type', 'grpc_service', 'grpc_method'] as const;

export const grpcStarted = counter({ name: 'grpc_server_started_total', help: 'Total number of RPCs started on the server.', labelNames: grpcLabels });
export const grpcHandled = counter({ name: 'grpc_server_handled_total', help: 'Total number of RPCs completed on the server, regardless of success or failure.', labelNames: [...grpcLabels, 'grpc_code'] });
export const grpcHandlingSeconds = histogram({ name: 'grpc_server_handling_seconds', help: 'Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.', labelNames: grpcLabels });

export const issueCalls = counter({
  name: 'coupon_issue_calls_total',
  help: 'IssueCoupon calls that passed authentication, by the caller (the token\'s sub): the per-call record of who drives a sale, in place of a log line per call.',
  labelNames: ['caller'],
});

export const countIssueCall: (caller: string) => void = boundByValue(issueCalls, 'caller');
