/**
 * A command declared once: its `--help` text and the way its command line is read both come from
 * the one declaration, so they cannot drift apart. Parsing is node:util parseArgs in strict mode;
 * whatever is wrong with the line (an unknown flag, a missing value, a stray argument, a bad
 * subcommand) is a USAGE error naming `quotaflow <name> --help`, which main.ts prints as one line
 * with exit code 2. Nothing is connected to before the line has been read.
 */
import { parseArgs } from 'node:util';
import { QuotaflowError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { EXIT, type Command, type CommandIO, type ReadLine } from './command.ts';

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  /** Given more than once, it collects a list (`--limit 300 --window 60s --limit 10000 --window 1h`). */
  readonly multiple?: boolean;
  /** The value's placeholder in `--help` and in usage errors: N, FILE, LIST. */
  readonly value?: string;
  /** Its line in `--help`; a '\n' starts a continuation line. */
  readonly help: string;
  /** The environment variable it falls back to (read in settings.ts), shown as its default. */
  readonly env?: string;
  /** What applies when neither the flag nor `env` is set, shown after the variable. */
  readonly fallback?: string;
  /** Older names that still work; `--help` shows only the declared one. */
  readonly aliases?: readonly string[];
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

type ValueOf<T extends OptionSpec> = T extends { type: 'boolean' }
  ? T extends { multiple: true }
    ? boolean[]
    : boolean
  : T extends { multiple: true }
    ? string[]
    : string;

/** The parsed flags, each absent unless given (environment fallbacks are settings.ts's business). */
export type Values<O extends OptionSpecs> = { -readonly [K in keyof O]?: ValueOf<O[K]> };

export interface SubcommandSpec<S extends string> {
  readonly name: S;
  /** Its entry under "Subcommands:" in `--help`; a '\n' starts a continuation line. */
  readonly help: string;
  /** What follows it on the line: 'FILE' is exactly one, 'FILE...' one or more; nothing by default. */
  readonly operands?: string;
}

export interface Invocation<O extends OptionSpecs, S extends string> {
  values: Values<O>;
  subcommand: [S] extends [never] ? undefined : S;
  /** The arguments after the subcommand (the FILEs of `policy validate FILE...`). */
  operands: string[];
  io: CommandIO;
}

export interface CommandSpec<O extends OptionSpecs, S extends string> {
  name: string;
  /** One line for `quotaflow --help`. */
  summary: string;
  /** The forms of the command line, one entry each; a '\n' starts a continuation line. */
  usage: readonly string[];
  /** Paragraphs of `--help` between the usage and the subcommands and options. */
  description: string;
  subcommands?: readonly SubcommandSpec<S>[];
  options: O;
  /** Each exactly as a user would type it; a `\` continuation stays in the one example. */
  examples: readonly string[];
  exitCodes?: Readonly<Record<number, string>>;
  run(call: Invocation<O, S>): Promise<number>;
}

/** Flags every command has, outside its declaration: they answer before anything is parsed. */
const BUILT_IN = { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' } } as const;

export function defineCommand<const O extends OptionSpecs, const S extends string = never>(spec: CommandSpec<O, S>): Command {
  const help = renderHelp(spec);
  const read = (argv: string[]) => readLine(spec, argv);
  return {
    name: spec.name,
    summary: spec.summary,
    help,
    examples: spec.examples,
    read,
    async run(argv, io) {
      const line = read(argv);
      if (line.kind === 'version') {
        io.out(`quotaflow ${VERSION}`);
        return EXIT.OK;
      }
      if (line.kind === 'help') {
        io.out(help);
        // A bare `quotaflow limits` shows the help, but as a command line it is incomplete.
        return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
      }
      return spec.run({ ...line, io } as unknown as Invocation<O, S>);
    },
  };
}

function readLine<O extends OptionSpecs, S extends string>(spec: CommandSpec<O, S>, argv: string[]): ReadLine {
  const usage = (message: string) => new QuotaflowError('USAGE', message, { hint: `run \`quotaflow ${spec.name} --help\` for usage and examples` });
  const byName = new Map<string, { name: string; spec: OptionSpec }>();
  for (const [name, o] of Object.entries(spec.options)) {
    for (const n of [name, ...(o.aliases ?? [])]) byName.set(n, { name, spec: o });
  }
  const options = Object.fromEntries([...byName].map(([n, o]) => [n, { type: o.spec.type, multiple: o.spec.multiple ?? false }]));

  // Lenient first: --help and --version win over anything else wrong on the line, and the tokens say what that was.
  const { tokens } = parseArgs({ args: argv, options: { ...options, ...BUILT_IN }, strict: false, allowPositionals: true, tokens: true });
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help')) return { kind: 'help' };
  if (tokens.some((t) => t.kind === 'option' && t.name === 'version')) return { kind: 'version' };
  if (spec.subcommands && argv.length === 0) return { kind: 'help' };

  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (e) {
    throw usage(whatIsWrong(tokens, byName) ?? (e instanceof Error ? e.message : String(e)));
  }
  const values: Record<string, unknown> = { ...parsed.values };
  for (const [n, o] of byName) {
    if (n === o.name || values[n] === undefined) continue;
    if (values[o.name] !== undefined) throw usage(`--${o.name} and --${n} are the same option: give one`);
    values[o.name] = values[n];
    delete values[n];
  }

  const [first, ...rest] = parsed.positionals;
  if (!spec.subcommands) {
    if (first !== undefined) throw usage(`unexpected argument '${first}'`);
    return { kind: 'run', values, subcommand: undefined, operands: [] };
  }
  const names = spec.subcommands.map((s) => s.name);
  const choice = `${names.slice(0, -1).join(', ')} or ${names.at(-1)}`;
  if (first === undefined) throw usage(`${spec.name} needs a subcommand: ${choice}`);
  const sub = spec.subcommands.find((s) => s.name === first);
  if (!sub) throw usage(`unknown subcommand '${first}': use ${choice}`);
  const operand = sub.operands?.replace(/\.\.\.$/, '');
  if (sub.operands === undefined && rest.length > 0) throw usage(`unexpected argument '${rest[0]}'`);
  if (sub.operands?.endsWith('...') && rest.length === 0) throw usage(`${spec.name} ${sub.name} needs at least one ${operand}`);
  if (sub.operands !== undefined && !sub.operands.endsWith('...') && rest.length !== 1) throw usage(`${spec.name} ${sub.name} needs exactly one ${operand}`);
  return { kind: 'run', values, subcommand: sub.name, operands: rest };
}

/** The part of a parseArgs token the diagnosis reads. */
interface Token {
  kind: string;
  name?: string;
  rawName?: string;
  value?: string | undefined;
  inlineValue?: boolean | undefined;
}

/** The first problem strict parsing found, in the command's words (parseArgs's own messages are long). */
function whatIsWrong(tokens: readonly Token[], byName: ReadonlyMap<string, { spec: OptionSpec }>): string | undefined {
  for (const t of tokens) {
    if (t.kind !== 'option') continue;
    const o = byName.get(t.name!)?.spec;
    if (!o) return `unknown option ${t.rawName}`;
    if (o.type === 'boolean' && t.value !== undefined) return `${t.rawName} takes no value`;
    if (o.type === 'string' && t.value === undefined) return `${t.rawName} needs a value (${o.value ?? 'a value'})`;
    if (o.type === 'string' && !t.inlineValue && t.value!.startsWith('-')) {
      return `${t.rawName} needs a value (${o.value ?? 'a value'}) before ${t.value}; a value that starts with '-' goes as ${t.rawName}=${t.value}`;
    }
  }
  return undefined;
}

// ─── --help ─────────────────────────────────────────────────────────────────────────────────────

/** Labels wider than this start their help after two spaces instead of at the common column. */
const LABEL_COLUMN = 20;

function renderHelp<O extends OptionSpecs, S extends string>(spec: CommandSpec<O, S>): string {
  const usage = spec.usage.flatMap((u, i) => u.split('\n').map((line, j) => `${i === 0 && j === 0 ? 'Usage: ' : '       '}${line}`));
  const options = Object.entries(spec.options).map(([name, o]): [string, string] => [`--${name}${o.value ? ` ${o.value}` : ''}`, withDefault(o)]);
  const sections = [
    usage.join('\n'),
    spec.description,
    ...(spec.subcommands ? [['Subcommands:', ...columns(spec.subcommands.map((s) => [s.name, s.help]))].join('\n')] : []),
    ['Options:', ...columns([...options, ['-h, --help', 'this text'], ['--version', "print quotaflow's version"]])].join('\n'),
    ['Examples:', ...spec.examples.flatMap((e) => e.split('\n').map((line) => `  ${line}`))].join('\n'),
    ...(spec.exitCodes ? [['Exit codes:', ...columns(Object.entries(spec.exitCodes))].join('\n')] : []),
  ];
  return sections.join('\n\n');
}

function withDefault(o: OptionSpec): string {
  if (o.env === undefined) return o.help;
  return `${o.help} (default: $${o.env}${o.fallback ? `, else ${o.fallback}` : ''})`;
}

function columns(rows: ReadonlyArray<readonly [string, string]>): string[] {
  const width = Math.min(LABEL_COLUMN, Math.max(...rows.map(([label]) => label.length)));
  const indent = ' '.repeat(2 + width + 2);
  return rows.flatMap(([label, text]) => {
    const [first, ...more] = text.split('\n');
    return [`  ${label.padEnd(width)}  ${first}`, ...more.map((line) => indent + line)];
  });
}
