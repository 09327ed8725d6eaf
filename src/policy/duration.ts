/**
 * Window lengths as written in policy files: a positive integer and one unit (`500ms`, `60s`, `1m`,
 * `1h`, `1d`). The arithmetic is src/windows' (one definition of a duration); this adds the pattern
 * the policy's JSON Schema publishes and a parse that reports "not a duration" as undefined, since
 * validation collects problems rather than stopping at the first.
 */
import { formatDuration as formatWindowDuration, parseDuration as parseWindowDuration } from '../windows/index.ts';

/** What a window/resolution string must match; a leading zero is refused so each length has one spelling. */
export const DURATION_PATTERN = '^[1-9][0-9]*(ms|s|m|h|d)$';
const DURATION_RE = new RegExp(DURATION_PATTERN);

/**
 * Milliseconds for `60s`, `1h`...; undefined when the text is not a positive duration (src/windows'
 * parseDuration is the one that throws, with the reason).
 */
export function tryParseDuration(text: string): number | undefined {
  if (!DURATION_RE.test(text)) return undefined;
  try {
    return parseWindowDuration(text);
  } catch {
    return undefined; // too large to be a safe integer of ms
  }
}

/** The shortest exact spelling of a length: 60000 → `1m`, 90000 → `90s`. */
export const formatDuration = formatWindowDuration;
