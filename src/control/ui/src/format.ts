/** Plain-text summaries of rules and diff values, for people (the JSON is one click away in history). */

type Json = unknown;

/** The lifecycle state of a release (none, or `state: idle`, is idle), as src/control/lifecycle.ts has it. */
export function stateOf(release: { state: 'idle' | 'canary' | 'full' } | undefined): 'idle' | 'canary' | 'full' {
  return !release || release.state === 'idle' ? 'idle' : release.state;
}
const isObject = (value: Json): value is Record<string, Json> => value !== null && typeof value === 'object' && !Array.isArray(value);

/** Compact JSON for a diff value, cut to `max` characters. */
export function compact(value: Json, max = 160): string {
  const text = value === undefined ? '(none)' : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function valueTest(subject: string, test: Record<string, Json>): string {
  if (test.present === true) return `${subject} is present`;
  if (typeof test.equals === 'string') return `${subject} = "${test.equals}"`;
  if (Array.isArray(test.oneOf)) return `${subject} in ${test.oneOf.map((v) => `"${String(v)}"`).join(', ')}`;
  if (typeof test.prefix === 'string') return `${subject} starts with "${test.prefix}"`;
  if (typeof test.regex === 'string') return `${subject} ~ /${test.regex}/`;
  return subject;
}

/** One condition (a strategy, or all/any/not of conditions) as a short sentence. */
export function describeCondition(condition: Record<string, Json>): string {
  for (const [kind, config] of Object.entries(condition)) {
    if (kind === 'name' || kind === 'to' || config === undefined) continue;
    if (kind === 'all' || kind === 'any') {
      const parts = (config as Record<string, Json>[]).map((c) => describeCondition(c));
      return `${kind === 'all' ? 'all of' : 'any of'} (${parts.join('; ')})`;
    }
    if (kind === 'not') return `not (${describeCondition(config as Record<string, Json>)})`;
    if (!isObject(config)) return `${kind}: ${compact(config, 80)}`;
    switch (kind) {
      case 'percentage':
        return `${String(config.percent)} % of callers${config.salt ? ` (salt ${String(config.salt)})` : ''}`;
      case 'uidRange':
        if (Array.isArray(config.ranges)) return `user id in ${(config.ranges as { from: number; to: number }[]).map((r) => `${r.from}–${r.to}`).join(', ')}`;
        if (config.fromKey) return `user id in the range at key ${String(config.fromKey)}`;
        return `user id in ${String(config.from)}–${String(config.to)}`;
      case 'uidList':
        return `user id in a list of ${(config.ids as Json[]).length}`;
      case 'cidr':
        return `client in ${(config.cidrs as string[]).join(', ')}`;
      case 'header':
      case 'cookie':
      case 'query':
        return valueTest(`${kind} ${String(config.name)}`, config);
      default:
        return `${kind} ${compact(config, 80)}`;
    }
  }
  return '(no condition)';
}
