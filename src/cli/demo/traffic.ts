/** The stand-in API behind the sidecar, and the HTTP clients that send the planned traffic through it. */
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Identity, TenantPlan } from './plan.ts';

interface Closable {
  url: string;
  close(): Promise<void>;
}

/** "The API" behind the sidecar: answers every request with 200 and a small JSON body. */
export async function startUpstream(): Promise<Closable> {
  let served = 0;
  const server = createServer((req, res) => {
    req.resume();
    const body = JSON.stringify({ data: { method: req.method, path: req.url }, request_id: `req_${(++served).toString(36)}` });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

export interface TenantCounts {
  sent: number;
  admitted: number;
  refused: number;
  failed: number;
}

const zero = (): TenantCounts => ({ sent: 0, admitted: 0, refused: 0, failed: 0 });

/**
 * HTTP clients, one schedule per tenant, over keep-alive connections to the sidecar. Requests are
 * evenly paced (no bursts, even after a stall), so a key planned under its limits stays under them
 * in every window, fixed or rolling.
 */
export class Traffic {
  readonly counts = new Map<string, TenantCounts>();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });
  private readonly inFlight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly plan: TenantPlan[],
    private readonly target: URL,
    private readonly identity: Identity,
    private readonly refusalStatus: number,
  ) {
    for (const t of plan) this.counts.set(t.key, zero());
  }

  start(): void {
    const t0 = Date.now();
    const schedule = this.plan.map((t, i) => ({ t, n: 0, next: t.overLimit ? t0 : t0 + ((i + 1) / (this.plan.length + 1)) * (1_000 / t.ratePerSec) }));
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const s of schedule) {
        if (now - s.next > 1_000) s.next = now; // after a stall, carry on rather than catch up in a burst
        for (; s.next <= now; s.next += 1_000 / s.t.ratePerSec) this.fire(s.t, s.n++);
      }
    }, 20);
  }

  /** Stops sending and waits for the answers to the requests in flight. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all(this.inFlight);
    this.agent.destroy();
  }

  totals(): TenantCounts {
    const total = zero();
    for (const c of this.counts.values()) for (const k of Object.keys(total) as Array<keyof TenantCounts>) total[k] += c[k];
    return total;
  }

  private fire(t: TenantPlan, n: number): void {
    const c = this.counts.get(t.key)!;
    c.sent++;
    const { method, path } = t.requests[n % t.requests.length]!;
    const headers = { ...this.identity.headers(t.key), 'X-Request-Id': `req_${t.key}_${n}` };
    const done = this.send(method, path, headers).then((status) => {
      if (status === this.refusalStatus) c.refused++;
      else if (status >= 200 && status < 300) c.admitted++;
      else c.failed++;
    });
    this.inFlight.add(done);
    void done.finally(() => this.inFlight.delete(done));
  }

  /** The response status, or 0 when there was none. */
  private send(method: string, path: string, headers: Record<string, string>): Promise<number> {
    return new Promise((resolve) => {
      const body = method === 'PUT' ? JSON.stringify({ slots: [{ number: '+14155550100', agent_id: 'ag_1042' }] }) : undefined;
      const req = httpRequest(
        {
          agent: this.agent,
          host: this.target.hostname,
          port: this.target.port,
          method,
          path,
          timeout: 10_000,
          headers: body ? { ...headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } : headers,
        },
        (res) => {
          res.once('end', () => resolve(res.statusCode ?? 0));
          res.once('error', () => resolve(0));
          res.resume();
        },
      );
      req.once('timeout', () => req.destroy(new Error('no answer within 10 s')));
      req.once('error', () => resolve(0));
      req.end(body);
    });
  }
}
