/** What refused (and admitted) responses carry: status, message, body and rate-limit headers. */
export {
  admittedHeaders,
  fromWindowState,
  limitState,
  refuse,
  refuseUnidentified,
  messageTemplate,
  renderBody,
  renderMessage,
  type HttpRefusal,
  type UnidentifiedRefusal,
  type RefusalInput,
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
  type LimitReport,
} from './headers.ts';
