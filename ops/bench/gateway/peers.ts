/**
 * Section 2: peers on the same Redis, limiters that ask Redis on every request: an Envoy-style
 * limiter (one pipelined INCRBY + EXPIRE round trip) and rate-limiter-flexible's RateLimiterRedis
 * (one consume()), each at several concurrencies, taking turns with section 1 within each run.
 */
import os from 'node:os';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { logger } from '../../../src/log.ts';
import { whenReady } from '../../../src/store/client.ts';
import { createRedisClient, type RedisClient } from '../../../src/store/index.ts';
import { checkAbort } from '../common/cli.ts';
import { int, mdTable, median, pct, perSec, ratio, type Figure } from '../common/figures.ts';
import { redisCpuS } from '../common/redis.ts';
import type { ChecksResult } from './checks.ts';
import type { GatewayBench } from './fleet.ts';
import { dur } from './format.ts';
import type { Sizes } from './options.ts';

export const SECTION = '2. peers';

/** A limiter that asks Redis on every request, measured the same way whatever it is. */
interface Peer {
  /** Short name, in figure names and progress. */
  name: string;
  /** What one request does, for the report. */
  does: string;
  /** Sets the peer up on a connected client; the function makes one request for key index `k`, true when allowed. */
  open(redis: RedisClient, prefix: string): (k: number) => Promise<boolean>;
}

const PEER_WINDOW_S = 60;
/** Far above what a key reaches in a run: every request is allowed, so each peer measures its admit path. */
const PEER_LIMIT = 1_000_000_000;

const PEERS: readonly Peer[] = [
  {
    name: 'Envoy-style',
    does: `what Envoy's rate limit service does per request: a fixed-window counter per key, one pipelined INCRBY key 1 + EXPIRE key ${PEER_WINDOW_S} round trip, then a compare with the limit`,
    open: (redis, prefix) => async (k) => {
      const key = `${prefix}envoy:api_key_k-${k}_${Math.floor(Date.now() / (PEER_WINDOW_S * 1000)) * PEER_WINDOW_S}`;
      const replies = await redis.pipeline().incrby(key, 1).expire(key, PEER_WINDOW_S).exec();
      const [err, n] = replies?.[0] ?? [new Error('no reply')];
      if (err) throw err;
      return Number(n) <= PEER_LIMIT;
    },
  },
  {
    name: 'rate-limiter-flexible',
    does: `rate-limiter-flexible's RateLimiterRedis (ioredis storeClient, points ${int(PEER_LIMIT)}, duration ${PEER_WINDOW_S} s, no insurance limiter, no in-memory block): consume(key), one EVALSHA of its Lua script (SET NX EX, INCRBY, PTTL) per request`,
    open: (redis, prefix) => {
      const limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: `${prefix}rlflx`, points: PEER_LIMIT, duration: PEER_WINDOW_S });
      return async (k) => {
        try {
          await limiter.consume(`api_key_k-${k}`);
          return true;
        } catch (e) {
          // It rejects with a RateLimiterRes to say "limited", and with an Error when Redis fails.
          if (e instanceof RateLimiterRes) return false;
          throw e;
        }
      };
    },
  },
];

interface PeerRun {
  concurrency: number;
  rate: number;
  p50: number;
  p99: number;
  /** Redis server CPU (user + sys, INFO) per request, µs. */
  redisCpuUs: number;
}

/**
 * `concurrency` requests in flight at once on one new connection, over `keys` keys, for `ms`; Redis's
 * CPU is read on `admin` before and after.
 */
async function peerRun(peer: Peer, url: string, admin: RedisClient, prefix: string, keys: number, concurrency: number, ms: number): Promise<PeerRun> {
  const redis = createRedisClient(url, { log: logger('bench.redis') });
  try {
    await whenReady(redis, 5_000, `connect to ${url}`);
    const request = peer.open(redis, prefix);
    await request(0); // the first call loads rate-limiter-flexible's script: not timed
    const cpu0 = await redisCpuS(admin);
    const lat: number[] = [];
    let n = 0;
    let refused = 0;
    const deadline = performance.now() + ms;
    const worker = async (w: number) => {
      for (let k = w; performance.now() < deadline; k += concurrency) {
        const s = performance.now();
        const allowed = await request(k % keys);
        lat.push(performance.now() - s);
        if (!allowed) refused++;
        n++;
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
    const elapsed = performance.now() - t0;
    const cpu = (await redisCpuS(admin)) - cpu0;
    if (refused) throw new Error(`${peer.name} refused ${refused} of ${n} requests: the limit is meant to be out of reach`);
    lat.sort((a, b) => a - b);
    return { concurrency, rate: (n * 1000) / elapsed, p50: pct(lat, 50), p99: pct(lat, 99), redisCpuUs: (cpu * 1e6) / n };
  } finally {
    await redis.quit().catch(() => redis.disconnect());
  }
}

/**
 * Run `r` of every peer at every concurrency, by peer. Peers take turns at each concurrency, the
 * first one alternating by run, so a drift in the machine's load falls on both.
 */
export async function peersRun(bench: GatewayBench, r: number): Promise<PeerRun[][]> {
  const { sizes, ui, services } = bench;
  const byPeer: PeerRun[][] = PEERS.map(() => []);
  for (const c of sizes.concurrencies) {
    for (let i = 0; i < PEERS.length; i++) {
      checkAbort();
      const p = (i + r) % PEERS.length;
      ui.update(`[2/4] run ${r + 1}/${sizes.runs}: ${PEERS[p]!.name}, ${c} in flight, ${sizes.peerMs / 1000} s…`);
      byPeer[p]!.push(await peerRun(PEERS[p]!, services.stack.redisUrl, services.redis, services.redisPrefix, sizes.keys, c, sizes.peerMs));
    }
  }
  return byPeer;
}

const times = (n: number) => ratio(n, 1);

/** The peers over every run: each one's best concurrency per run, and how ours compares with it. */
export class PeerSummary {
  /** Per peer, per run: the concurrency where it did the most requests/s. */
  readonly best: PeerRun[][];
  readonly rate: number[];
  readonly bestConcurrency: number[];
  /** At the lowest concurrency: an unloaded round trip. */
  readonly roundTrip: number[];

  /** `runs`: [run][peer][concurrency]. */
  constructor(
    readonly runs: PeerRun[][][],
    private readonly concurrencies: number[],
  ) {
    this.best = PEERS.map((_, p) => runs.map((byPeer) => byPeer[p]!.reduce((a, b) => (b.rate > a.rate ? b : a))));
    this.rate = this.best.map((b) => median(b.map((x) => x.rate)));
    this.bestConcurrency = this.best.map((b) => median(b.map((x) => x.concurrency)));
    this.roundTrip = PEERS.map((_, p) => median(runs.map((byPeer) => byPeer[p]![0]!.p50)));
  }

  /** Ours ÷ peer `p`'s best, within each run. */
  perRun(ours: number[], p: number): number[] {
    return ours.map((x, r) => x / this.best[p]![r]!.rate);
  }

  vsRate(ours: number[]): string {
    return PEERS.map((peer, p) => `${times(median(this.perRun(ours, p)))} ${peer.name}`).join(', ');
  }

  get vsTrip(): string {
    return `Redis round trip p50 ${PEERS.map((peer, p) => `${dur(this.roundTrip[p]!)} (${peer.name})`).join(', ')} at ${this.concurrencies[0]} in flight`;
  }
}

export function peersFigures(peers: PeerSummary, checks: ChecksResult, sizes: Sizes): Figure[] {
  const sustained = checks.allowed.map((r) => r.sustained);
  const checkOnly = checks.allowed.map((r) => r.checkOnly);
  const figures: Figure[] = PEERS.flatMap((peer, p): Figure[] => [
    {
      section: SECTION,
      name: `${peer.name}: requests/s, best concurrency (${peers.bestConcurrency[p]} in flight)`,
      values: peers.best[p]!.map((b) => b.rate),
      fmt: perSec,
      vs: `Redis CPU ${(median(peers.best[p]!.map((b) => b.redisCpuUs))).toFixed(1)} µs per request`,
    },
    {
      section: SECTION,
      name: `our check() ÷ ${peer.name}, every event sent to Kafka`,
      values: peers.perRun(sustained, p),
      fmt: times,
      vs: 'allowed path, within each run',
    },
    {
      section: SECTION,
      name: `our check() ÷ ${peer.name}, inside check() only`,
      values: peers.perRun(checkOnly, p),
      fmt: times,
      vs: 'allowed path, within each run',
    },
  ]);
  PEERS.forEach((peer, p) => {
    sizes.concurrencies.forEach((c, ci) => {
      const at = peers.runs.map((byPeer) => byPeer[p]![ci]!);
      figures.push({
        section: SECTION,
        name: `${peer.name}, ${c} in flight: requests/s`,
        values: at.map((x) => x.rate),
        fmt: perSec,
        vs: `p50 ${dur(median(at.map((x) => x.p50)))}, p99 ${dur(median(at.map((x) => x.p99)))} per request`,
      });
    });
  });
  return figures;
}

export function peersReport(peers: PeerSummary, checks: ChecksResult, figures: readonly Figure[], sizes: Sizes): string[] {
  const cores = os.cpus().length;
  const faster = PEERS.map((peer, p) => {
    const cpuUs = median(peers.best[p]!.map((b) => b.redisCpuUs));
    const core = (cpuUs * peers.rate[p]!) / 1e6;
    return `${peer.name} peaks at ${peers.bestConcurrency[p]} in flight, where Redis spent ${cpuUs.toFixed(1)} µs of CPU per request (${(core * 100).toFixed(0)}% of a core at ${perSec(peers.rate[p]!)}: ${core > 0.8 ? 'Redis itself is close to its limit' : 'the client (Node, in this process) and the round trip bound it, with Redis and the broker on the same ' + cores + ' cores'})`;
  }).join('; ');
  const sustained = checks.allowed.map((r) => r.sustained);
  const checkOnly = checks.allowed.map((r) => r.checkOnly);
  return [
    '## 2. Peers',
    '',
    'Two limiters that ask Redis on every request, on the same Redis, each from this process over one new ioredis connection, over the same ' +
      `${int(sizes.keys)} keys, all requests allowed (limits far out of reach, so each measures its admit path, as section 1's allowed path does): ` +
      `${PEERS.map((peer) => `**${peer.name}**, ${peer.does}`).join('; ')}. ` +
      `Each runs with ${sizes.concurrencies.join(', ')} requests in flight for ${sizes.peerMs / 1000} s at each, the two taking turns at each concurrency (which goes first alternates by run), in the same run as section 1; the best concurrency of each run is its figure. ` +
      "\"our check() ÷ peer\" divides section 1's allowed-path checks/s by the peer's best in the same run, then takes the median over the runs. Redis CPU is INFO used_cpu_user + used_cpu_sys around each peer's run. " +
      "Ours needs no network per check, so its figure is bounded by CPU and by shipping usage events; the peers' are bounded by Redis round trips.",
    '',
    ...mdTable(figures),
    '',
    `Ratio: the gateway does ${PEERS.map((peer, p) => `${times(median(peers.perRun(sustained, p)))} ${peer.name}'s requests/s with every usage event sent to Kafka and ${times(median(peers.perRun(checkOnly, p)))} counting check() alone`).join('; ')}; ` +
      `a check takes ${dur(median(checks.allowed.map((r) => r.p50)))} at p50 where the peers wait ${PEERS.map((peer, p) => `${dur(peers.roundTrip[p]!)} (${peer.name})`).join(' and ')} for an unloaded round trip.`,
    '',
    `What would make them faster: ${faster}; more connections and a client on its own host would raise them, but each request still waits a round trip — the one the gateway does not make.`,
    '',
  ];
}
