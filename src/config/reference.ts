import { z } from 'zod';
import { ErrorCodes } from '../errors.js';
import { identitySources } from '../identity/index.js';
import { strategies } from '../rules/strategies/index.js';
import { Condition, RoutingDocument, Settings } from './schema.js';

/**
 * Generates the reference docs from the code: docs/config.md from the zod schema (through
 * `z.toJSONSchema` and the `.meta()` descriptions) and docs/errors.md from `ErrorCodes`. A test
 * compares them with the committed files; `npm run docs` rewrites them.
 */

type Json = { [key: string]: unknown };

interface Row {
  readonly path: string;
  readonly type: string;
  readonly default: string;
  readonly description: string;
}

const LINK = 'x-graygate-link';
const SAFE_MAX = Number.MAX_SAFE_INTEGER;

function strategyAnchor(kind: string): string {
  return `strategy-${kind.toLowerCase()}`;
}
function sourceAnchor(kind: string): string {
  return `identity-source-${kind.toLowerCase()}`;
}

/** JSON Schema of a zod schema, input side (what users write), strategies and sources as links. */
function jsonSchemaOf(schema: z.ZodType, linkParts: boolean): Json {
  const strategySchemas = new Map<unknown, string>(Object.entries(strategies).map(([kind, s]) => [s.schema, kind]));
  const sourceSchemas = new Map<unknown, string>(Object.entries(identitySources).map(([kind, s]) => [s.schema, kind]));
  return z.toJSONSchema(schema, {
    io: 'input',
    unrepresentable: 'any',
    override: (context) => {
      // zod leaves out the default of a field whose schema transforms (e.g. a header name
      // lower-cased) on the input side; users still need to see it.
      const def = (context.zodSchema as unknown as { _zod?: { def?: { type?: string; defaultValue?: unknown } } })._zod?.def;
      if ((def?.type === 'default' || def?.type === 'prefault') && !('default' in context.jsonSchema)) {
        (context.jsonSchema as Json).default = def.defaultValue;
      }
      if (!linkParts || (context.zodSchema as unknown) === schema) return;
      const strategy = strategySchemas.get(context.zodSchema);
      const source = sourceSchemas.get(context.zodSchema);
      if (strategy === undefined && source === undefined) return;
      const json = context.jsonSchema as Json;
      for (const key of Object.keys(json)) if (key !== 'description') delete json[key];
      json[LINK] = strategy !== undefined ? `[${strategy}](#${strategyAnchor(strategy)})` : `[${source}](#${sourceAnchor(source!)})`;
    },
  }) as Json;
}

function refName(node: Json): string | undefined {
  const ref = node.$ref;
  return typeof ref === 'string' ? ref.replace(/^#\/\$defs\//, '') : undefined;
}

function literal(value: unknown): string {
  return JSON.stringify(value);
}

function typeOf(node: Json): string {
  if (typeof node[LINK] === 'string') return node[LINK];
  const ref = refName(node);
  if (ref !== undefined) return `[${ref}](#${ref.toLowerCase()})`;
  if (Array.isArray(node.enum)) return node.enum.map(literal).join(' | ');
  if ('const' in node) return literal(node.const);
  if (Array.isArray(node.anyOf) || Array.isArray(node.oneOf)) {
    const branches = (node.anyOf ?? node.oneOf) as Json[];
    const tags = branches.map((branch) =>
      Object.entries((branch.properties ?? {}) as Record<string, Json>).find(([, child]) => 'const' in child),
    );
    if (tags.every((tag) => tag !== undefined) && tags.every((tag) => tag![0] === tags[0]![0])) {
      return `object (${tags[0]![0]}: ${tags.map((tag) => literal(tag![1].const)).join(' or ')})`;
    }
    return branches.map(typeOf).join(' or ');
  }
  switch (node.type) {
    case 'array': {
      const items = node.items as Json | undefined;
      const bounds = node.minItems !== undefined ? `, at least ${node.minItems as number}` : '';
      return `list of ${items ? typeOf(items) : 'any'}${bounds}`;
    }
    case 'object':
      if (node.additionalProperties && typeof node.additionalProperties === 'object') return 'map of name → object';
      return 'object';
    case 'integer':
    case 'number': {
      const min = node.minimum as number | undefined;
      const max = node.maximum as number | undefined;
      const parts: string[] = [];
      if (min !== undefined && min > -SAFE_MAX) parts.push(`≥ ${min}`);
      if (max !== undefined && max < SAFE_MAX) parts.push(`≤ ${max}`);
      return parts.length ? `${node.type as string} (${parts.join(', ')})` : (node.type as string);
    }
    case 'string':
      return node.minLength ? 'string (non-empty)' : 'string';
    case 'boolean':
      return 'boolean';
    default:
      return node.type === undefined ? 'any' : String(node.type);
  }
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** Flattens an object schema into rows: one per field, nested objects and lists included. */
function collect(node: Json, path: string, required: boolean, rows: Row[], note = ''): void {
  const description = `${note}${typeof node.description === 'string' ? node.description : ''}`;
  const hasDefault = 'default' in node;
  if (path !== '') {
    rows.push({
      path,
      type: typeOf(node),
      default: hasDefault ? `\`${literal(node.default)}\`` : required ? 'required' : '',
      description,
    });
  }
  if (typeof node[LINK] === 'string' || refName(node) !== undefined) return;
  const join = (key: string) => (path === '' ? key : `${path}.${key}`);
  if (node.type === 'object' && node.properties && typeof node.properties === 'object') {
    const requiredKeys = new Set((node.required as string[] | undefined) ?? []);
    for (const [key, child] of Object.entries(node.properties as Record<string, Json>)) {
      collect(child, join(key), requiredKeys.has(key) && !('default' in child), rows);
    }
  }
  if (node.type === 'object' && node.additionalProperties && typeof node.additionalProperties === 'object') {
    collect(node.additionalProperties as Json, join('<name>'), false, rows);
  }
  if (node.type === 'array' && node.items && typeof node.items === 'object') {
    const items = node.items as Json;
    if (items.type === 'object' || Array.isArray(items.anyOf)) collect({ ...items, description: undefined }, `${path}[]`, false, rows);
  }
  const branches = (node.anyOf ?? node.oneOf) as Json[] | undefined;
  if (Array.isArray(branches)) {
    for (const branch of branches) {
      if (branch.type !== 'object' || !branch.properties) continue;
      const discriminator = Object.entries(branch.properties as Record<string, Json>).find(([, child]) => 'const' in child);
      const label = discriminator ? `With ${discriminator[0]}: ${literal(discriminator[1].const)}. ` : '';
      const requiredKeys = new Set((branch.required as string[] | undefined) ?? []);
      for (const [key, child] of Object.entries(branch.properties as Record<string, Json>)) {
        if (discriminator && key === discriminator[0]) continue;
        collect(child, join(key), requiredKeys.has(key) && !('default' in child), rows, label);
      }
    }
  }
}

function table(rows: readonly Row[]): string {
  const lines = ['| Field | Type | Default | Description |', '| --- | --- | --- | --- |'];
  for (const row of rows) {
    lines.push(`| \`${cell(row.path)}\` | ${cell(row.type)} | ${cell(row.default)} | ${cell(row.description)} |`);
  }
  return lines.join('\n');
}

function section(schema: z.ZodType, linkParts = true): { description: string; rows: Row[] } {
  let json = jsonSchemaOf(schema, linkParts);
  // A schema with an id (Condition) comes back as a reference to its own definition.
  const own = refName(json);
  if (own !== undefined) json = { ...((json.$defs as Record<string, Json>)[own] ?? {}) };
  const rows: Row[] = [];
  collect(json, '', true, rows);
  return { description: typeof json.description === 'string' ? json.description : '', rows };
}

/** The text of docs/config.md, generated from the schema and the strategy and source tables. */
export function configReference(): string {
  const out: string[] = [];
  out.push('# Configuration reference');
  out.push('');
  out.push('<!-- Generated from src/config/schema.ts by `npm run docs`; do not edit by hand. -->');
  out.push('');
  out.push(
    'A config file (YAML or JSON) holds the **settings**, read once at start, and optionally the ' +
      '**routing document** (`upstreams`, `services`, `identity`), which lives in the store, is versioned ' +
      'and is applied live. Every field is checked; an unknown field is an error, and every problem is ' +
      'reported with its path, e.g. `services[0].release.rules[2].uidRange.from: expected integer, got "5k"`.',
  );
  out.push('');
  out.push('Paths: `a.b` is a field, `a[]` an element of a list, `a.<name>` an entry of a map.');
  out.push('');

  const settings = section(Settings);
  out.push('## Settings', '', settings.description || 'Read once at start.', '', table(settings.rows), '');

  const routing = section(RoutingDocument);
  out.push('## Routing document', '', routing.description, '', table(routing.rows), '');
  out.push(
    'Beyond the shape, a routing document must make sense: every `stable` and `candidate` names a ' +
      'defined upstream; a candidate differs from its stable; no two services share a name or the same ' +
      '`match` (host and path prefix, `/api/` being `/api`); no server is listed twice in an upstream; rule ' +
      'names are unique within a release; a rule that reads the caller\'s identity needs at least one ' +
      'identity source; and every strategy accepts its config when compiled.',
    '',
  );
  out.push(
    'Service matching: an exact host first, then wildcard hosts (`*.example.com`, longest suffix first; it ' +
      'needs at least one label in front), then services without a host; within one of these, the longest ' +
      'path prefix on whole segments wins, and when none of its prefixes matches the next one is tried.',
    '',
  );
  out.push(
    'Sticky hashing: the release seed of a service is its name, so a caller keeps its bucket across rule ' +
      'edits, config versions and gateways; renaming a service re-buckets its callers.',
    '',
  );

  const condition = section(Condition);
  out.push('### Condition', '', condition.description, '');
  out.push('A rule (and each element of `all` / `any` / `not`) holds exactly one of these keys:', '');
  out.push(table(condition.rows), '');

  out.push('## Strategies', '');
  for (const [kind, strategy] of Object.entries(strategies)) {
    const part = section(strategy.schema as z.ZodType, false);
    out.push(`### Strategy \`${kind}\``, '', part.description, '');
    if (part.rows.length > 0) out.push(table(part.rows.map((row) => ({ ...row, path: `${kind}.${row.path}` }))), '');
  }

  out.push('## Identity sources', '', 'Listed under `identity.sources`, tried in order; the first that yields an id wins.', '');
  for (const [kind, source] of Object.entries(identitySources)) {
    const part = section(source.schema as z.ZodType, false);
    out.push(`### Identity source \`${kind}\``, '', part.description, '');
    if (part.rows.length > 0) out.push(table(part.rows.map((row) => ({ ...row, path: `${kind}.${row.path}` }))), '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

/** The text of docs/errors.md, generated from `ErrorCodes`. */
export function errorsReference(): string {
  const out = [
    '# Error codes',
    '',
    '<!-- Generated from src/errors.ts by `npm run docs`; do not edit by hand. -->',
    '',
    'Every error graygate reports carries a stable `code`; match on it, not on the message. Clients get',
    '`{"error":{"code":"…","message":"…"}}`.',
    '',
    '| Code | HTTP status | Meaning |',
    '| --- | --- | --- |',
  ];
  for (const [code, { status, doc }] of Object.entries(ErrorCodes)) out.push(`| \`${code}\` | ${status} | ${cell(doc)} |`);
  return `${out.join('\n')}\n`;
}

/** Every generated doc, by path relative to the repository root. */
export function generatedDocs(): Record<string, string> {
  return { 'docs/config.md': configReference(), 'docs/errors.md': errorsReference() };
}
