/** What refused (and admitted) responses carry: status, message, body and rate-limit headers. */
export {
  admittedHeaders,
  fromWindowState,
  limitState,
  refuse,
  messageTemplate,
  renderMessage,
  type HttpRefusal,
  type RefusalInput,
  type WindowLimitState,
} from './refusal.ts';
export {
  ietfFields,
  isBlocked,
  limitName,
  rateLimitHeaders,
  remaining,
  secondsUntil,
  xRateLimitSubject,
  type HeaderInput,
  type LimitState,
} from './headers.ts';
