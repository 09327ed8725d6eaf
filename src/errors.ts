/**
 * The one error type of quotaflow. Every failure carries a stable `code` (for scripts and metrics),
 * whether retrying may help, a `hint` telling the user the next step, and the underlying `cause`.
 * A quota refusal is never an error: it is a normal value returned by `check()`.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'POLICY_INVALID'
  | 'PREREQ_MISSING'
  | 'PORT_IN_USE'
  | 'SERVICE_UNREACHABLE'
  | 'SERVICE_START_FAILED'
  | 'TIMEOUT'
  /** Another aggregator wrote a tenant's counters since this one loaded them (rebalance, zombie). */
  | 'FENCE_CONFLICT'
  /** The command cannot run in the state it found (e.g. a rebuild while aggregators are running). */
  | 'PRECONDITION_FAILED'
  | 'USAGE';

export interface QuotaflowErrorOptions {
  retriable?: boolean;
  hint?: string;
  cause?: unknown;
  details?: Record<string, unknown>;
}

export class QuotaflowError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: QuotaflowErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'QuotaflowError';
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.hint = options.hint;
    this.details = options.details;
  }

  /** The message a person reads: what is wrong, then what to do. */
  describe(): string {
    return this.hint ? `${this.message}\n  → ${this.hint}` : this.message;
  }
}

export function isQuotaflowError(e: unknown): e is QuotaflowError {
  return e instanceof QuotaflowError;
}
