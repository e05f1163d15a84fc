import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { AdminCallError, createClient, ExitCode, withClientOptions, type AdminClient, type ClientOptions } from './client.js';
import { fetchImpact, printImpact } from './impact.js';
import { print, printJson, run, table } from './output.js';

interface ReleaseOptions extends ClientOptions {
  reason?: string;
  dryRun?: boolean;
  expectVersion?: string;
  candidate?: string;
  winner?: string;
  percent?: string;
  uidRange?: string[];
  header?: string[];
  rules?: string;
  waitDrained?: boolean;
  timeout: string;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** Rules from --rules (JSON, or @file with JSON/YAML), --uid-range and --header, in that order. */
function rulesOf(options: ReleaseOptions): unknown[] | undefined {
  const rules: unknown[] = [];
  if (options.rules !== undefined) {
    const file = options.rules.startsWith('@') ? options.rules.slice(1) : undefined;
    let parsed: unknown;
    try {
      parsed = parseYaml(file !== undefined ? readFileSync(file, 'utf8') : options.rules) as unknown;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (error as Error).message.split('\n')[0];
      throw new AdminCallError(undefined, 'usage', `--rules: ${file !== undefined ? `cannot read ${file}: ` : 'not JSON or YAML: '}${why}`);
    }
    if (!Array.isArray(parsed)) throw new AdminCallError(undefined, 'usage', '--rules: expected a JSON/YAML list of rules');
    rules.push(...parsed);
  }
  if (options.uidRange?.length) {
    const ranges = options.uidRange.map((text) => {
      const match = /^(-?\d+)(?:-|\.\.)(-?\d+)$/.exec(text.trim());
      if (!match) throw new AdminCallError(undefined, 'usage', `--uid-range: expected FROM-TO like 1-5000, got ${JSON.stringify(text)}`);
      return { from: Number(match[1]), to: Number(match[2]) };
    });
    rules.push({ name: 'uid-range', uidRange: { ranges } });
  }
  for (const text of options.header ?? []) {
    const at = text.indexOf('=');
    if (at <= 0) throw new AdminCallError(undefined, 'usage', `--header: expected NAME=VALUE, got ${JSON.stringify(text)}`);
    rules.push({ name: `header-${text.slice(0, at).toLowerCase()}`, header: { name: text.slice(0, at), equals: text.slice(at + 1) } });
  }
  return rules.length > 0 ? rules : undefined;
}

function percentOf(options: ReleaseOptions): number | undefined {
  if (options.percent === undefined) return undefined;
  const percent = Number(options.percent);
  if (!Number.isFinite(percent)) throw new AdminCallError(undefined, 'usage', `--percent: expected a number from 0 to 100, got ${JSON.stringify(options.percent)}`);
  return percent;
}

function timeoutOf(options: ReleaseOptions): number {
  const timeoutMs = Number(options.timeout);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) throw new AdminCallError(undefined, 'usage', `--timeout: expected milliseconds like 60000, got ${JSON.stringify(options.timeout)}`);
  return timeoutMs;
}

function versionOf(options: ReleaseOptions): number | undefined {
  if (options.expectVersion === undefined) return undefined;
  const version = Number(options.expectVersion);
  if (!Number.isSafeInteger(version) || version < 0) throw new AdminCallError(undefined, 'usage', `--expect-version: expected a version number, got ${JSON.stringify(options.expectVersion)}`);
  return version;
}

interface DrainReportReply {
  drained: boolean;
  scope: 'process' | 'fleet';
  gateways: number;
  gatewaysBehind: number;
  inFlightRequests: number;
  openConnections: number;
  stable: { upstream: string; inFlightRequests: number; openConnections: number };
  upstreams: Record<string, { inFlightRequests: number; openConnections: number }>;
}

/** Where the figures come from, in words: `the fleet (2 gateways)` or `this gateway`. */
function scopeText(report: DrainReportReply): string {
  return report.scope === 'fleet' ? `the fleet (${report.gateways} gateway${report.gateways === 1 ? '' : 's'})` : 'this gateway';
}

/** The per-upstream figures of a drain report as a table, stable's row marked. */
export function upstreamTable(upstreams: Record<string, { inFlightRequests: number; openConnections: number }>, stable?: string): string {
  const names = Object.keys(upstreams).sort();
  return table(
    ['UPSTREAM', 'IN FLIGHT', 'CONNECTIONS'],
    names.map((name) => [name === stable ? `${name} (stable)` : name, String(upstreams[name]!.inFlightRequests), String(upstreams[name]!.openConnections)]),
  );
}

/**
 * Polls the drain report until stable has drained (over the fleet when the gateways share Redis),
 * or `timeoutMs` passes. A store that cannot be read for a moment (503) is waited out, not fatal.
 */
export async function waitDrained(client: AdminClient, service: string, timeoutMs: number, json: boolean | undefined): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last: DrainReportReply | undefined;
  let lastError: AdminCallError | undefined;
  for (;;) {
    try {
      last = (await client.call('GET', `/v1/services/${encodeURIComponent(service)}/release/drain`)) as DrainReportReply;
      lastError = undefined;
    } catch (error) {
      if (!(error instanceof AdminCallError) || error.status !== 503 || Date.now() >= deadline) throw error;
      lastError = error;
    }
    if (last?.drained && lastError === undefined) {
      if (json) printJson(last);
      else {
        print(
          `stable of ${service} has drained over ${scopeText(last)}: ${last.stable.inFlightRequests} requests in flight to ${last.stable.upstream}, ` +
            `${last.stable.openConnections} connections open to it`,
        );
        print(upstreamTable(last.upstreams, last.stable.upstream));
      }
      return ExitCode.ok;
    }
    if (Date.now() >= deadline) {
      if (json) printJson(last ?? { error: { code: lastError?.code, message: lastError?.message } });
      else if (last === undefined) process.stderr.write(`graygate: stable of ${service} did not drain within ${timeoutMs} ms (${lastError?.message ?? 'no report'})\n`);
      else {
        const behind = last.gatewaysBehind > 0 ? `; ${last.gatewaysBehind} gateway(s) not yet past the switch` : '';
        process.stderr.write(
          `graygate: stable of ${service} did not drain within ${timeoutMs} ms over ${scopeText(last)}: ${last.stable.inFlightRequests} requests in flight to ${last.stable.upstream}${behind}\n`,
        );
        process.stderr.write(`${upstreamTable(last.upstreams, last.stable.upstream)}\n`);
      }
      return ExitCode.timeout;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function action(name: 'start' | 'set' | 'full' | 'finish' | 'rollback', description: string): Command {
  const command = withClientOptions(
    new Command(name)
      .description(description)
      .argument('<service>', 'service name')
      .option('--reason <text>', 'why (kept in the history); required unless --dry-run')
      .option('--expect-version <n>', 'refuse (exit 5) unless the routing document is still at this version')
      .option('--dry-run', 'write nothing: say how many callers seen recently would change version'),
  );
  if (name === 'start') command.option('--candidate <upstream>', 'the candidate upstream (default: the idle release\'s)');
  if (name === 'start' || name === 'set') {
    command
      .option('--uid-range <from-to>', 'send user ids in this inclusive range to the candidate (repeatable)', collect)
      .option('--header <name=value>', 'send requests with this header value to the candidate (repeatable)', collect)
      .option('--rules <json|@file>', 'the ordered rules as a JSON/YAML list (or @file); replaces the release\'s rules')
      .option('--percent <n>', 'a sticky percentage of identified callers (the rule named "percentage")');
  }
  if (name === 'full') {
    command
      .option('--winner <upstream>', 'with several candidates: the one that takes everyone')
      .option('--wait-drained', 'then wait until stable has drained: no request in flight to it on any gateway that shares the store (this gateway alone on the file store)')
      .addOption(new Option('--timeout <ms>', 'how long --wait-drained waits').default('60000'));
  } else command.addOption(new Option('--timeout <ms>').default('60000').hideHelp());
  // A dry run writes nothing and needs no reason; a write does (checked before anything else, as a required option would be).
  command.hook('preAction', (self) => {
    const given = self.opts<{ reason?: string; dryRun?: boolean }>();
    if (given.reason === undefined && !given.dryRun) self.error("error: required option '--reason <text>' not specified", { code: 'commander.missingMandatoryOptionValue' });
  });
  return command.action(async (service: string, options: ReleaseOptions) =>
    run(options.json, async () => {
      const client = createClient(options);
      const rules = name === 'start' || name === 'set' ? rulesOf(options) : undefined;
      const percentage = percentOf(options);
      const version = versionOf(options);
      const timeoutMs = timeoutOf(options);
      const params = {
        ...(options.candidate !== undefined ? { candidate: options.candidate } : {}),
        ...(options.winner !== undefined ? { winner: options.winner } : {}),
        ...(rules !== undefined ? { rules } : {}),
        ...(percentage !== undefined ? { percentage } : {}),
      };
      if (options.dryRun) {
        printImpact(await fetchImpact(client, { release: { service, action: name, params } }), options.json);
        return ExitCode.ok;
      }
      const body = { reason: options.reason, ...(version !== undefined ? { version } : {}), ...params };
      const result = await client.call('POST', `/v1/services/${encodeURIComponent(service)}/release/${name}`, body);
      if (options.json && !options.waitDrained) printJson(result);
      else if (!options.json) {
        print(
          result.changed
            ? `${service}: ${result.from} → ${result.to} (routing version ${result.previousVersion} → ${result.version}, by ${result.actor})`
            : `${service}: already ${result.to}; nothing changed (routing version ${result.version})`,
        );
      }
      if (options.waitDrained) return waitDrained(client, service, timeoutMs, options.json);
      return ExitCode.ok;
    }),
  );
}

/** `graygate release start|set|full|finish|rollback`: the lifecycle, one versioned write per move. */
export function registerReleaseCommand(program: Command): void {
  program
    .command('release')
    .description('Run a release: start a canary, set its rules, send everyone (full), finish, or roll back — through the admin API.')
    .addCommand(action('start', 'idle → canary: start a canary with rules (--uid-range, --header, --rules, --percent)'))
    .addCommand(action('set', 'canary: replace the rules or set the percentage'))
    .addCommand(action('full', 'canary → full: everyone on the candidate; --wait-drained waits until stable has drained'))
    .addCommand(action('finish', 'full → idle: the release is removed (update stable first, e.g. `graygate config apply`)'))
    .addCommand(action('rollback', 'any → idle at once: no rule reaches the candidate any more (idempotent)'));
}
