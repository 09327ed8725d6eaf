/**
 * The quotaflow package: `import { Gateway } from 'quotaflow'`.
 * The gateway SDK and HTTP middleware, the policy loader, and the event and decision schemas.
 */
export {
  Gateway,
  UNLIMITED_QUOTA,
  type GatewayKafka,
  type CheckRequest,
  type CheckResult,
  type CheckReason,
  type Fallback,
  type GatewayOptions,
  type GatewayStats,
} from './gateway/gateway.ts';
export {
  quotaflowMiddleware,
  fastifyOnRequest,
  checkRequestOf,
  isBadCheckRequest,
  applyResult,
  answerBadRequest,
  type BadCheckRequest,
  type Middleware,
  type MiddlewareOptions,
} from './gateway/http.ts';
export { startSidecar, type Sidecar, type SidecarOptions } from './gateway/sidecar.ts';
export { compilePolicy, loadPolicyFile, parsePolicyText, type CompiledPolicy, type Policy } from './policy/index.ts';
export { KAFKA_CLIENTS, type KafkaClientName } from './kafka/port.ts';
export { topicNames } from './kafka/topics.ts';
export * from './events/index.ts';
