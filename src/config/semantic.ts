import type { Condition, RoutingDocument, Rule } from './schema.js';
import { strategies, type StrategyKind } from '../rules/strategies/index.js';
import type { CompileContext, Matcher, RequestInput } from '../rules/strategy.js';
import { describeValue, formatPath } from './issues.js';
import { hasIdentity, releaseIssues } from './release-checks.js';

/** `/api/` and `/api` are the same whole-segment prefix; the root stays `/`. */
export function normalizePathPrefix(prefix: string): string {
  let end = prefix.length;
  while (end > 1 && prefix.charCodeAt(end - 1) === 47 /* / */) end--;
  return end === prefix.length ? prefix : prefix.slice(0, end);
}

type Strategy = {
  compile(config: unknown, context: CompileContext): Matcher;
  inputs(config: unknown): readonly RequestInput[];
};
const strategyKinds = Object.keys(strategies) as StrategyKind[];

function quoteList(names: readonly string[]): string {
  return names.length === 0 ? '(none)' : names.join(', ');
}

/** Walks a condition tree, calling `leaf` for each strategy with its path. */
function forEachLeaf(condition: Condition | Rule, path: string, leaf: (kind: StrategyKind, config: unknown, path: string) => void): void {
  const record = condition as Record<string, unknown>;
  if (record.all !== undefined) (record.all as Condition[]).forEach((c, i) => forEachLeaf(c, `${path}.all[${i}]`, leaf));
  else if (record.any !== undefined) (record.any as Condition[]).forEach((c, i) => forEachLeaf(c, `${path}.any[${i}]`, leaf));
  else if (record.not !== undefined) forEachLeaf(record.not as Condition, `${path}.not`, leaf);
  else {
    for (const kind of strategyKinds) if (record[kind] !== undefined) leaf(kind, record[kind], `${path}.${kind}`);
  }
}

const hostLabels = /^(\*\.)?([A-Za-z0-9-]+\.)*[A-Za-z0-9-]+$/;

/**
 * Checks what the schema cannot: names resolve, a release's candidate is not its stable, no
 * two services share a name or a match, hosts are well formed, servers and rule names are not
 * repeated, rules that read the identity have an identity source, and every strategy accepts
 * its config when compiled. Returns every issue as a `path: message` line (empty when valid).
 */
export function semanticIssues(document: RoutingDocument): string[] {
  const issues: string[] = [];
  const known = Object.keys(document.upstreams);
  const knownText = quoteList(known);
  const hasUpstream = (name: string) => Object.prototype.hasOwnProperty.call(document.upstreams, name);

  for (const [name, upstream] of Object.entries(document.upstreams)) {
    const seen = new Map<string, number>();
    upstream.servers.forEach((server, i) => {
      const origin = new URL(server).origin;
      const first = seen.get(origin);
      if (first !== undefined) issues.push(`${formatPath(['upstreams', name, 'servers', i])}: ${describeValue(server)} is listed twice (servers[${first}])`);
      else seen.set(origin, i);
    });
  }

  const names = new Map<string, number>();
  const matches = new Map<string, number>();
  const hasIdentitySource = hasIdentity(document);
  document.services.forEach((service, s) => {
    const at = `services[${s}]`;
    const previousName = names.get(service.name);
    if (previousName !== undefined) issues.push(`${at}.name: service "${service.name}" is already defined (services[${previousName}])`);
    else names.set(service.name, s);

    const host = service.match.host;
    if (host !== undefined && !hostLabels.test(host)) {
      issues.push(`${at}.match.host: ${describeValue(host)} is not a host name (empty label, or "*" not as the whole first label)`);
    }
    const prefix = normalizePathPrefix(service.match.pathPrefix);
    const matchKey = `${host ?? '*any*'} ${prefix}`;
    const previousMatch = matches.get(matchKey);
    if (previousMatch !== undefined) {
      issues.push(
        `${at}.match: same host ${host === undefined ? '(any)' : `"${host}"`} and pathPrefix "${prefix}" as services[${previousMatch}] ` +
          `("${document.services[previousMatch]!.name}"); this service could never be chosen`,
      );
    } else matches.set(matchKey, s);

    if (!hasUpstream(service.stable)) issues.push(`upstream "${service.stable}" is not defined (${at}.stable); known: ${knownText}`);
    const release = service.release;
    if (!release) return;
    issues.push(...releaseIssues(document, service, at, knownText));

    const ruleNames = new Map<string, number>();
    const context: CompileContext = { storeValue: () => undefined, releaseSeed: service.name };
    release.rules.forEach((rule, r) => {
      const rulePath = `${at}.release.rules[${r}]`;
      if (rule.name !== undefined) {
        const previous = ruleNames.get(rule.name);
        if (previous !== undefined) issues.push(`${rulePath}.name: rule name "${rule.name}" is already used by rules[${previous}]`);
        else ruleNames.set(rule.name, r);
      }
      forEachLeaf(rule, rulePath, (kind, config, path) => {
        const strategy = strategies[kind] as Strategy;
        if (!hasIdentitySource && strategy.inputs(config).some((input) => input.kind === 'identity')) {
          issues.push(`${path}: reads the caller's identity, but identity.sources is empty; add one, e.g. {header: {name: x-user-id}}`);
        }
        // Compiling here refuses, before it is stored, what only the strategy can judge.
        try {
          strategy.compile(config, context);
        } catch (error) {
          const found = (error as { issues?: unknown }).issues;
          const lines = Array.isArray(found) ? (found as string[]) : [(error as Error)?.message ?? String(error)];
          for (const line of lines) issues.push(`${path}${line.startsWith('.') || line.startsWith('[') ? '' : ': '}${line}`);
        }
      });
    });
  });
  return [...new Set(issues)];
}
