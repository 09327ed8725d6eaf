/** Terminal output for people: aligned tables and a progress line that redraws in place on a TTY. */

export function table(headers: string[], rows: Array<Array<string | number>>, align?: Array<'left' | 'right'>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => ((align?.[i] ?? (typeof rows[0]?.[i] === 'number' ? 'right' : 'left')) === 'right' ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export interface Progress {
  update(text: string): void;
  done(text?: string): void;
}

/** On a TTY one line redrawn in place; elsewhere (CI, pipes) a line at most every `everyMs`. */
export function progress(stream: NodeJS.WriteStream = process.stderr, everyMs = 2_000): Progress {
  let last = 0;
  let shown = '';
  return {
    update(text) {
      if (stream.isTTY) {
        stream.write(`\r\x1b[2K${text}`);
        shown = text;
      } else if (Date.now() - last >= everyMs) {
        stream.write(text + '\n');
        last = Date.now();
      }
    },
    done(text) {
      if (stream.isTTY && shown) stream.write('\r\x1b[2K');
      if (text) stream.write(text + '\n');
    },
  };
}

export function rate(count: number, ms: number): string {
  return ms > 0 ? `${Math.round((count * 1000) / ms).toLocaleString('en-US')}/s` : '—';
}

export interface LiveView {
  /** Replaces the previous frame with `lines`. */
  draw(lines: string[]): void;
  /** Erases the last frame, leaving the cursor where it began. */
  clear(): void;
}

/**
 * A block of lines redrawn in place on a TTY: the cursor goes back up over the last frame, which is
 * cleared to the end of the screen. Lines are clipped to the terminal's width and the frame to its
 * height, since a wrapped or scrolled-off line would throw the count off.
 */
export function liveView(stream: NodeJS.WriteStream = process.stdout): LiveView {
  let shown = 0;
  const erase = () => (shown ? `\r\x1b[${shown}A\x1b[J` : '\r\x1b[J');
  return {
    draw(lines) {
      const width = Math.max(20, (stream.columns || 120) - 1);
      const height = Math.max(3, (stream.rows || 50) - 1);
      const frame = lines.slice(0, height).map((l) => clip(l, width));
      stream.write(`${erase()}${frame.join('\n')}\n`);
      shown = frame.length;
    },
    clear() {
      stream.write(erase());
      shown = 0;
    },
  };
}

/** `text` cut to `width` characters, ending in '…' when cut. */
export function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}

/** 1234567 → "1,234,567". */
export function count(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}
