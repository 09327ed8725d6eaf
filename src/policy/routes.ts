/**
 * Route patterns and the per-method segment trie requests are matched against. Matching walks one
 * path segment at a time (no regex scan over every route); at each depth a literal segment is tried
 * before a parameter, and at the end an exact method before `*`.
 */

export type Segment = { kind: 'static'; text: string } | { kind: 'param'; name: string };

export interface ParsedRoute {
  method: string;
  segments: Segment[];
}

/** "GET /v2/agent/:agent_id" → method and segments; `{agent_id}` is accepted as `:agent_id`. Empty segments are ignored. */
export function parseRoute(route: string): ParsedRoute {
  const space = route.indexOf(' ');
  const method = route.slice(0, space);
  const segments: Segment[] = [];
  for (const raw of route.slice(space + 1).split('/')) {
    if (raw === '') continue;
    if (raw.startsWith(':')) segments.push({ kind: 'param', name: raw.slice(1) });
    else if (raw.startsWith('{') && raw.endsWith('}')) segments.push({ kind: 'param', name: raw.slice(1, -1) });
    else segments.push({ kind: 'static', text: raw });
  }
  return { method, segments };
}

/** The pattern with parameter names erased: two routes with the same shape match the same paths. */
export function routeShape(route: ParsedRoute): string {
  return '/' + route.segments.map((s) => (s.kind === 'param' ? ':' : s.text)).join('/');
}

/** Two routes clash when their shapes and methods are equal; `GET /x` next to `* /x` is fine (exact beats `*`). */
export function sameMethod(a: string, b: string): boolean {
  return a === b;
}

interface Target<T> {
  value: T;
  paramNames: readonly string[];
}

interface Node<T> {
  statics: Map<string, Node<T>> | undefined;
  param: Node<T> | undefined;
  byMethod: Map<string, Target<T>> | undefined;
  anyMethod: Target<T> | undefined;
}

export interface RouteMatch<T> {
  value: T;
  /** Route parameters by name, e.g. { agent_id: "123" } (raw, not percent-decoded). */
  params: Record<string, string>;
}

const SLASH = 47;

function node<T>(): Node<T> {
  return { statics: undefined, param: undefined, byMethod: undefined, anyMethod: undefined };
}

export class RouteTable<T> {
  private readonly root: Node<T> = node();

  /** Adds a route; the caller has already refused duplicate routes (validate.ts). */
  add(route: ParsedRoute, value: T): void {
    let at = this.root;
    const paramNames: string[] = [];
    for (const segment of route.segments) {
      if (segment.kind === 'static') {
        at.statics ??= new Map();
        let next = at.statics.get(segment.text);
        if (!next) at.statics.set(segment.text, (next = node()));
        at = next;
      } else {
        paramNames.push(segment.name);
        at = at.param ??= node();
      }
    }
    const target = { value, paramNames };
    if (route.method === '*') at.anyMethod = target;
    else (at.byMethod ??= new Map()).set(route.method, target);
  }

  /** The route matching `method path` (query string and fragment ignored), or undefined. */
  match(method: string, path: string): RouteMatch<T> | undefined {
    let end = path.indexOf('?');
    const hash = path.indexOf('#');
    if (hash !== -1 && (end === -1 || hash < end)) end = hash;
    if (end === -1) end = path.length;
    const values: string[] = [];
    const target = walk(this.root, path, 0, end, method, values);
    if (!target) return undefined;
    const params: Record<string, string> = {};
    for (let i = 0; i < values.length; i++) params[target.paramNames[i]!] = values[i]!;
    return { value: target.value, params };
  }
}

function walk<T>(at: Node<T>, path: string, pos: number, end: number, method: string, values: string[]): Target<T> | undefined {
  while (pos < end && path.charCodeAt(pos) === SLASH) pos++;
  if (pos >= end) return at.byMethod?.get(method) ?? at.anyMethod;
  let next = path.indexOf('/', pos);
  if (next === -1 || next > end) next = end;
  const segment = path.slice(pos, next);
  const child = at.statics?.get(segment);
  if (child) {
    const found = walk(child, path, next, end, method, values);
    if (found) return found;
  }
  if (at.param) {
    values.push(segment);
    const found = walk(at.param, path, next, end, method, values);
    if (found) return found;
    values.pop();
  }
  return undefined;
}
