/** Terminal output for people: aligned tables and a progress line that redraws in place on a TTY. */

export function table(headers: string[], rows: Array<Array<string | number>>, align?: Array<'left' | 'right'>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r.map((c, i) => ((align?.[i] ?? (typeof rows[0]?.[i] === 'number' ? 'right' : 'left')) === 'right' ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
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
