// The API's routes: CouponService, gRPC health and reflection, registered in one place.
import type { ConnectRouter, ServiceImpl } from '@connectrpc/connect';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { file_coupon_v1_error } from '../../gen/coupon/v1/error_pb.js';
import { Health } from '../../gen/health/v1/health_pb.js';
import type { DependencyMonitor } from '../ops/dependencies.ts';
import { healthRoutes } from './health.ts';
import { reflectionRoutes } from './reflection.ts';

export function routes(coupons: ServiceImpl<typeof CouponService>, health: DependencyMonitor) {
  return (router: ConnectRouter) => {
    router.service(CouponService, coupons);
    healthRoutes(router, health, [CouponService.typeName]);
    // coupon.v1.ErrorDetail is imported by no service file; served too, so buf curl and grpcurl
    // can print the details of errors.
    reflectionRoutes(router, [CouponService, Health], [file_coupon_v1_error]);
  };
}
