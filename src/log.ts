/**
 * Structured logs: one JSON object per line on stderr (stdout stays free for command output).
 * `QUOTAFLOW_LOG=debug|info|warn|error|silent` sets the level; `QUOTAFLOW_LOG_FORMAT=pretty` prints
 * `level component message key=value` lines for people watching a terminal. Only entry points read
 * the environment: they call `configureLogging` once; libraries just call `logger(component)`.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level | 'silent', number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

export interface LogConfig {
  level: Level | 'silent';
  format: 'json' | 'pretty';
  write: (line: string) => void;
}

const config: LogConfig = {
  level: 'info',
  format: 'json',
  write: (line) => process.stderr.write(line + '\n'),
};

export function configureLogging(next: Partial<LogConfig>): void {
  Object.assign(config, next);
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

function serialise(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    const code = (value as { code?: unknown }).code;
    if (code !== undefined) out.code = code;
    if (value.cause !== undefined) out.cause = serialise(value.cause);
    return out;
  }
  return value;
}

export function logger(component: string): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < ORDER[config.level]) return;
    if (config.format === 'pretty') {
      const kv = Object.entries(fields ?? {})
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(serialise(v))}`)
        .join(' ');
      config.write(`${level.padEnd(5)} ${component}: ${msg}${kv ? ' ' + kv : ''}`);
      return;
    }
    const record: Record<string, unknown> = { t: new Date().toISOString(), level, component, msg };
    for (const [k, v] of Object.entries(fields ?? {})) record[k] = serialise(v);
    config.write(JSON.stringify(record));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (sub) => logger(`${component}.${sub}`),
  };
}
