import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import type { RolloutEvidence, RolloutRun } from '../../config/schema.js';
import { describeStep } from '../../rollout/run.js';
import { AdminCallError, createClient, ExitCode, withClientOptions, type ClientOptions } from './client.js';
import { fetchImpact, printImpact } from './impact.js';
import { print, printJson, run, table } from './output.js';

interface RolloutOptions extends ClientOptions {
  reason?: string;
  dryRun?: boolean;
  candidate?: string;
  plan?: string;
  expectVersion?: string;
}

interface LiveReply {
  rollout: string;
  step: number;
  outcome: string;
  evidence: RolloutEvidence[];
  elapsedMs: number;
  holdMs: number;
  driver: string;
}

interface StatusReply {
  version: number;
  service: string;
  state: string;
  plan: unknown;
  run: RolloutRun | null;
  live: LiveReply | null;
}

const formatValue = (metric: string, value: number | null) => {
  if (value === null) return '-';
  if (metric === 'errors') return `${Math.round(value * 10_000) / 100} %`;
  if (metric.startsWith('latency')) return `${Math.round(value * 10) / 10} ms`;
  return String(value);
};

/** Evidence as a table: check, outcome, the candidate's value, stable's in the same window, the bound, samples. */
export function evidenceTable(evidence: readonly RolloutEvidence[]): string {
  return table(
    ['CHECK', 'OUTCOME', 'CANDIDATE', 'STABLE', 'BOUND', 'SAMPLES (cand/stable)'],
    evidence.map((e) => [e.metric, e.outcome, formatValue(e.metric, e.candidate), formatValue(e.metric, e.stable), formatValue(e.metric, e.bound), `${e.samples.candidate}/${e.samples.stable}`]),
  );
}

/** One piece of evidence in a line: both versions' figures and the bound first, then the sentence. */
function evidenceLine(e: RolloutEvidence): string {
  const figures = `candidate ${formatValue(e.metric, e.candidate)}, stable ${formatValue(e.metric, e.stable)}, bound ${formatValue(e.metric, e.bound)}, samples ${e.samples.candidate}/${e.samples.stable}`;
  return `${e.metric} ${e.outcome}: ${figures} — ${e.detail}`;
}

/** `rollout status` in words: the run, the step, why, the live evidence, and the record. */
function printStatus(status: StatusReply): void {
  const current = status.run;
  if (current === null) {
    print(`${status.service}: no rollout has run (release ${status.state}${status.plan ? '; a plan is configured: `graygate rollout start`' : '; no plan configured'})`);
    return;
  }
  print(`${status.service}: rollout ${current.id} of ${current.candidate} — ${current.status} (release ${status.state}, routing version ${status.version})`);
  print(`  ${describeStep(current.plan, current.step)}; since ${current.stepStartedAt}`);
  print(`  why: ${current.reason}`);
  if (status.live) {
    const live = status.live;
    print(`  now: ${live.outcome}, ${Math.round(live.elapsedMs / 1000)} s of ${Math.round(live.holdMs / 1000)} s held (driven by ${live.driver})`);
    if (live.evidence.length > 0) print(evidenceTable(live.evidence).replace(/^/gm, '  '));
  }
  print('  record:');
  for (const record of current.records) {
    print(`    ${record.at}  step ${record.step + 1}  ${record.event}  by ${record.by}: ${record.reason}`);
    const failing = record.evidence.filter((e) => e.outcome !== 'pass');
    if (record.event === 'rollback' || record.event === 'pause') for (const e of failing) print(`      ${evidenceLine(e)}`);
  }
}

function planOf(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  const file = text.startsWith('@') ? text.slice(1) : undefined;
  try {
    return parseYaml(file !== undefined ? readFileSync(file, 'utf8') : text) as unknown;
  } catch (error) {
    throw new AdminCallError(undefined, 'usage', `--plan: ${file !== undefined ? `cannot read ${file}` : 'not JSON or YAML'}: ${(error as Error).message.split('\n')[0]}`);
  }
}

function versionOf(options: RolloutOptions): number | undefined {
  if (options.expectVersion === undefined) return undefined;
  const version = Number(options.expectVersion);
  if (!Number.isSafeInteger(version) || version < 0) throw new AdminCallError(undefined, 'usage', `--expect-version: expected a version number, got ${JSON.stringify(options.expectVersion)}`);
  return version;
}

function action(name: 'start' | 'pause' | 'resume' | 'promote' | 'abort', description: string): Command {
  const command = withClientOptions(
    new Command(name)
      .description(description)
      .argument('<service>', 'service name')
      .option('--reason <text>', `why (kept in the history and the rollout's record)${name === 'start' || name === 'promote' ? '; required unless --dry-run' : ''}`)
      .option('--expect-version <n>', 'refuse (exit 5) unless the routing document is still at this version'),
  );
  if (name === 'start' || name === 'promote') command.option('--dry-run', 'write nothing: say how many callers seen recently the step would move');
  if (name === 'start') {
    command.option('--candidate <upstream>', 'the candidate upstream (default: the release\'s)').option('--plan <json|@file>', 'the plan (JSON/YAML, or @file); default: the service\'s `rollout`');
  }
  // A dry run writes nothing and needs no reason; a write does (checked before anything else, as a required option would be).
  command.hook('preAction', (self) => {
    const given = self.opts<{ reason?: string; dryRun?: boolean }>();
    if (given.reason === undefined && !given.dryRun) self.error("error: required option '--reason <text>' not specified", { code: 'commander.missingMandatoryOptionValue' });
  });
  return command.action(async (service: string, options: RolloutOptions) =>
    run(options.json, async () => {
      const client = createClient(options);
      const version = versionOf(options);
      const plan = planOf(options.plan);
      if (options.dryRun && (name === 'start' || name === 'promote')) {
        const rollout = { service, action: name, ...(options.candidate !== undefined ? { candidate: options.candidate } : {}), ...(plan !== undefined ? { plan } : {}) };
        printImpact(await fetchImpact(client, { rollout }), options.json);
        return ExitCode.ok;
      }
      const body = {
        reason: options.reason,
        ...(version !== undefined ? { version } : {}),
        ...(options.candidate !== undefined ? { candidate: options.candidate } : {}),
        ...(plan !== undefined ? { plan } : {}),
      };
      const result = await client.call('POST', `/v1/services/${encodeURIComponent(service)}/rollout/${name}`, body);
      if (options.json) printJson(result);
      else {
        const current = result.run as RolloutRun | null;
        const where = current ? `${current.status}, ${describeStep(current.plan, current.step)}` : 'no run';
        print(result.changed ? `${service}: rollout ${name}: ${where} (routing version ${result.previousVersion} → ${result.version})` : `${service}: nothing changed (${where})`);
      }
      return ExitCode.ok;
    }),
  );
}

/** `graygate rollout start|status|promote|pause|resume|abort`: a progressive rollout through the admin API. */
export function registerRolloutCommand(program: Command): void {
  const status = withClientOptions(new Command('status').description('The rollout: step, status and why, live evidence against each bound, and every step\'s record').argument('<service>', 'service name')).action(
    async (service: string, options: ClientOptions) =>
      run(options.json, async () => {
        const reply = (await createClient(options).call('GET', `/v1/services/${encodeURIComponent(service)}/rollout`)) as StatusReply;
        if (options.json) printJson(reply);
        else printStatus(reply);
        return ExitCode.ok;
      }),
  );
  program
    .command('rollout')
    .description('Run a progressive rollout: steps with holds, judged against stable, rolled back by itself on a breach — through the admin API.')
    .addCommand(action('start', 'start the service\'s plan (or --plan) at step 1'))
    .addCommand(status)
    .addCommand(action('promote', 'the next step now: passes a gate, or cuts a hold short'))
    .addCommand(action('pause', 'hold the rollout at its step (routing stays as it is)'))
    .addCommand(action('resume', 'carry on: the step starts over, its routing put back'))
    .addCommand(action('abort', 'roll the release back to stable at once and end the rollout'));
}
