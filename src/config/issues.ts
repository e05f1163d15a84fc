import type { z } from 'zod';

/** Longest rendering of a value in a message; config inputs can be arbitrarily large. */
const MAX_VALUE_CHARS = 80;

/** Renders a value for a message as JSON, truncated so a huge input never floods a log line. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  let text: string;
  try {
    text = typeof value === 'bigint' ? `${value}n` : (JSON.stringify(value) ?? String(value));
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

const plainKey = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** Formats a path as users write it: `services[0].release.rules[2].uidRange.from`, `upstreams["a.b"]`. */
export function formatPath(path: readonly PropertyKey[], prefix = ''): string {
  let text = prefix;
  for (const key of path) {
    if (typeof key === 'number') text += `[${key}]`;
    else if (typeof key === 'string' && plainKey.test(key)) text += text.length === 0 ? key : `.${key}`;
    else text += `[${JSON.stringify(String(key))}]`;
  }
  return text;
}

/** Zod's own default messages start like this; they are replaced by ones that show the value. */
const zodDefault = /^(Invalid input|Invalid option|Invalid string|Invalid key|Invalid discriminator|Invalid element|Too small|Too big|Unrecognized key)/;

function sizeUnit(origin: string | undefined, count: number | bigint): string {
  const plural = Number(count) === 1 ? '' : 's';
  if (origin === 'array' || origin === 'set') return `item${plural}`;
  if (origin === 'string') return `character${plural}`;
  if (origin === 'object' || origin === 'record' || origin === 'map') return `entr${plural ? 'ies' : 'y'}`;
  return '';
}

/** Where a path is in the source text (a 1-based line), when known. */
export type Locate = (path: readonly PropertyKey[]) => number | undefined;

/** One issue as `message` (without its path); more lines for unknown keys and unions. */
/** A size (`at least 1 item`) or a number bound (`>= 0, got -1`) an input is outside of. */
function describeBound(issue: z.core.$ZodIssueTooSmall | z.core.$ZodIssueTooBig): string {
  const small = issue.code === 'too_small';
  const limit = small ? issue.minimum : issue.maximum;
  const exclusive = issue.inclusive === false;
  const unit = sizeUnit(issue.origin, limit);
  if (unit) return `expected ${small ? (exclusive ? 'more than' : 'at least') : exclusive ? 'fewer than' : 'at most'} ${limit} ${unit}`;
  return `expected ${small ? (exclusive ? '>' : '>=') : exclusive ? '<' : '<='} ${limit}, got ${describeValue(issue.input)}`;
}

function issueLines(issue: z.core.$ZodIssue, prefix: string, lines: string[], locate?: Locate): void {
  const at = formatPath(issue.path, prefix);
  const put = (where: string, message: string, path: readonly PropertyKey[] = issue.path): void => {
    const line = locate?.(path);
    lines.push(`${where.length > 0 ? `${where}: ` : ''}${message}${line === undefined ? '' : ` (line ${line})`}`);
  };
  const custom = !zodDefault.test(issue.message);
  switch (issue.code) {
    case 'unrecognized_keys':
      for (const key of issue.keys) put(formatPath([key], at), `unknown field ${JSON.stringify(key)}`, [...issue.path, key]);
      return;
    case 'invalid_type':
      if (issue.input === undefined) put(at, 'required');
      else put(at, custom ? issue.message : `expected ${issue.expected === 'int' ? 'integer' : issue.expected}, got ${describeValue(issue.input)}`);
      return;
    case 'invalid_value':
      if (custom) put(at, issue.message);
      else if (issue.values.length === 1) put(at, `expected ${describeValue(issue.values[0])}, got ${describeValue(issue.input)}`);
      else put(at, `expected one of ${issue.values.map((v) => describeValue(v)).join(', ')}, got ${describeValue(issue.input)}`);
      return;
    case 'too_small':
    case 'too_big':
      put(at, custom ? issue.message : describeBound(issue));
      return;
    case 'invalid_format':
      // Custom pattern messages say what is expected; add what was given unless they already do.
      if (!custom) put(at, `expected ${issue.format} format, got ${describeValue(issue.input)}`);
      else put(at, issue.message.includes('got ') ? issue.message : `${issue.message}, got ${describeValue(issue.input)}`);
      return;
    case 'invalid_key': {
      const inner: string[] = [];
      for (const sub of issue.issues) issueLines(sub, '', inner);
      put(at, `invalid name ${describeValue(issue.input)}: ${inner.join('; ') || issue.message}`);
      return;
    }
    case 'invalid_union': {
      // Report the branch that got furthest (fewest issues): usually the one the user meant.
      const branches = issue.errors.filter((branch) => branch.length > 0).sort((a, b) => a.length - b.length);
      const best = branches[0];
      if (best && !custom) {
        for (const sub of best) issueLines({ ...sub, path: [...issue.path, ...sub.path] } as z.core.$ZodIssue, prefix, lines, locate);
        return;
      }
      const { discriminator, options } = issue as { discriminator?: string; options?: unknown[] };
      if (discriminator) {
        // zod puts the discriminator in the path already.
        const value = (issue.input as Record<string, unknown> | undefined)?.[discriminator];
        const allowed = options?.length ? `expected ${options.map((o) => describeValue(o)).join(' or ')}, ` : '';
        put(at, value === undefined ? `required${allowed ? ` (${allowed.slice(0, -2)})` : ''}` : `${allowed}got ${describeValue(value)}`);
        return;
      }
      put(at, custom ? issue.message : `no allowed form matches ${describeValue(issue.input)}`);
      return;
    }
    default:
      put(at, issue.message);
  }
}

/**
 * Formats every issue of a zod error as `path: message` lines (unknown fields one line each),
 * deduplicated, in zod's order; parse with `{ reportInput: true }` so values can be shown.
 */
export function formatIssues(
  error: z.ZodError | { issues: readonly z.core.$ZodIssue[] },
  prefix = '',
  locate?: Locate,
): string[] {
  const lines: string[] = [];
  for (const issue of error.issues) issueLines(issue, prefix, lines, locate);
  return [...new Set(lines)];
}
