import { EXIT, untilAborted } from './command.ts';
import { defineCommand } from './define.ts';
import { kafkaBrokers, kafkaClient, metricsPort, shared, topicPrefix } from './settings.ts';
import { QuotaflowError } from '../errors.ts';
import { logger } from '../log.ts';
import { compilePolicy, loadPolicyFile } from '../policy/index.ts';
import { Gateway, type Fallback } from '../gateway/gateway.ts';
import { startSidecar } from '../gateway/sidecar.ts';
import { startTelemetry } from '../telemetry/sdk.ts';

function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port <= 65_535)) {
    throw new QuotaflowError('USAGE', `--listen ${JSON.stringify(text)} is not HOST:PORT`, { hint: 'e.g. `--listen 127.0.0.1:8080` or `--listen 0.0.0.0:0`' });
  }
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

export const gatewayCommand = defineCommand({
  name: 'gateway',
  summary: 'the sidecar: enforce a policy over HTTP, as a proxy or a check service',
  usage: ['quotaflow gateway --policy FILE [--listen HOST:PORT] [--upstream URL] [options]'],
  description: `The sidecar: an HTTP server that enforces the policy for gateways in any language. Each request is
checked locally against the cached block decisions (no network on the request path), refused ones get
the policy's status, message, body and headers, and a usage event goes to Kafka either way.
With --upstream it is a reverse proxy in front of that URL; without, it answers admitted requests
itself with 200 and a small JSON body, so another proxy can ask it and act on the status.
GET /_quotaflow/health answers 200 once the decision cache is warm (503 before).`,
  options: {
    policy: { type: 'string', value: 'FILE', help: 'the policy (YAML or JSON) to enforce (required)' },
    listen: { type: 'string', value: 'HOST:PORT', help: 'where to listen (default 127.0.0.1:8080; port 0 picks a free one)' },
    upstream: { type: 'string', value: 'URL', help: 'forward admitted requests to this http(s) URL' },
    ...shared('brokers'),
    region: { type: 'string', value: 'NAME', help: 'region stamped on usage events (default: local)' },
    'gateway-id': { type: 'string', value: 'ID', help: "this gateway's id on usage events (default: host-pid-random)" },
    ...shared('topic-prefix', 'kafka-client'),
    fallback: {
      type: 'string',
      value: 'MODE',
      help: "until the decision cache is warm: local (enforce limits on this gateway's own\nadmissions, the default), open (admit all) or closed (refuse all)",
    },
    buffer: { type: 'string', value: 'N', help: 'usage events held while Kafka is away before drops start (default 100000)' },
    'check-headers': {
      type: 'string',
      value: 'on|off',
      help: 'read the API and subjects from X-Quotaflow-Api and X-Quotaflow-Subjects\n(account=a1&bot=b1); default on without --upstream, off with one',
    },
    coalesce: {
      type: 'string',
      value: 'on|off',
      help: 'fold identical requests waiting to be sent (same subjects, route and outcome,\nwithin one bucket of the policy) into one event with a count; default on',
    },
    ...shared('metrics-port'),
  },
  examples: [
    'quotaflow gateway --policy policies/talkpilot.yaml --listen 127.0.0.1:8080',
    'quotaflow gateway --policy policies/bolna.yaml --upstream http://127.0.0.1:3000 --check-headers on   # an auth proxy in front sets X-Quotaflow-Subjects: organization=o1&user=u1',
    "curl -i -H 'X-API-Key: tp_live_1' http://127.0.0.1:8080/v1/calls",
  ],
  exitCodes: {
    0: 'stopped by SIGTERM or Ctrl-C, after sending buffered events',
    1: 'the policy is invalid',
    2: 'bad usage',
    3: 'the --listen or metrics port is taken',
  },
  async run({ values, io }) {
    if (!values.policy) throw new QuotaflowError('USAGE', '--policy FILE is required', { hint: 'e.g. `quotaflow gateway --policy policies/talkpilot.yaml`' });
    const brokers = kafkaBrokers(values, io.env);
    const prefix = topicPrefix(values, io.env);
    const fallback = (values.fallback ?? 'local') as Fallback;
    if (!['local', 'open', 'closed'].includes(fallback)) {
      throw new QuotaflowError('USAGE', `--fallback ${JSON.stringify(values.fallback)} is not one of local, open, closed`, { hint: 'e.g. `--fallback open`' });
    }
    const buffer = values.buffer === undefined ? undefined : Number(values.buffer);
    if (buffer !== undefined && !(Number.isInteger(buffer) && buffer > 0)) {
      throw new QuotaflowError('USAGE', `--buffer ${JSON.stringify(values.buffer)} is not a positive whole number`, { hint: 'e.g. `--buffer 500000`' });
    }
    if (values.upstream !== undefined && !/^https?:\/\/[^/]/.test(values.upstream)) {
      throw new QuotaflowError('USAGE', `--upstream ${JSON.stringify(values.upstream)} is not an http(s) URL`, {
        hint: 'e.g. `--upstream http://127.0.0.1:3000`',
      });
    }
    const coalesceFlag = values.coalesce;
    if (coalesceFlag !== undefined && coalesceFlag !== 'on' && coalesceFlag !== 'off') {
      throw new QuotaflowError('USAGE', `--coalesce ${JSON.stringify(coalesceFlag)} is not on or off`, { hint: 'e.g. `--coalesce off`' });
    }
    const checkHeadersFlag = values['check-headers'];
    if (checkHeadersFlag !== undefined && checkHeadersFlag !== 'on' && checkHeadersFlag !== 'off') {
      throw new QuotaflowError('USAGE', `--check-headers ${JSON.stringify(checkHeadersFlag)} is not on or off`, { hint: 'e.g. `--check-headers on`' });
    }
    const { host, port } = parseListen(values.listen ?? '127.0.0.1:8080');
    const log = logger('gateway');
    const telemetry = await startTelemetry({ service: 'quotaflow-gateway', metricsPort: metricsPort(values, io.env) });
    if (telemetry.metricsUrl) log.info('serving metrics', { url: telemetry.metricsUrl });
    try {
      const policy = compilePolicy(await loadPolicyFile(values.policy));
      const kafka = { brokers, clientId: `quotaflow-gateway-${process.pid}`, client: kafkaClient(values, io.env) };
      const gateway = new Gateway({
        policy,
        kafka,
        fallback,
        region: values.region,
        gatewayId: values['gateway-id'],
        topicPrefix: prefix,
        maxBuffered: buffer,
        coalesce: coalesceFlag === undefined ? undefined : coalesceFlag === 'on',
        log,
      });
      gateway.start();
      const sidecar = await startSidecar({
        gateway,
        host,
        port,
        upstream: values.upstream,
        log,
        checkHeaders: checkHeadersFlag === undefined ? undefined : checkHeadersFlag === 'on',
      });
      log.info('gateway listening', { url: sidecar.url, upstream: values.upstream ?? null, policy: values.policy, version: policy.version, fallback });
      io.out(`listening on ${sidecar.url}${values.upstream ? ` → ${values.upstream}` : ''}`);
      gateway.whenWarm(60_000).then(
        () => log.info('decision cache warm', { cachedBlocks: gateway.cache.size }),
        (e) => log.warn('decision cache not warm yet; still using the fallback', { error: e, fallback }),
      );
      await untilAborted(io.signal);
      log.info('stopping: closing the listener, then sending buffered events', { buffered: gateway.emitter?.buffered ?? 0 });
      await sidecar.close();
      await gateway.stop();
      log.info('stopped', { ...gateway.stats, sent: gateway.emitter?.stats.sent ?? 0, dropped: gateway.emitter?.stats.dropped ?? 0 });
      return EXIT.OK;
    } finally {
      await telemetry.shutdown();
    }
  },
});
