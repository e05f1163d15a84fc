import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { ConfigError } from '../errors.js';
import { formatIssues, type Locate } from './issues.js';
import { RoutingDocument, routingKeys, Settings, type ConfigFile } from './schema.js';
import { deepFreeze } from './freeze.js';
import { semanticIssues } from './semantic.js';

export type { ConfigFile };

/** A loaded config file: settings, and the routing document when the file holds one. */
export interface LoadedConfig {
  readonly settings: Settings;
  /** Present only when the file has `upstreams` or `services`. Validated and frozen. */
  readonly routing: RoutingDocument | undefined;
  /** Absolute path of the file read. */
  readonly path: string;
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * Validates a routing document (from a file, the store or the API): schema, then meaning, then
 * deep-freeze. Throws `ConfigError` (GG_CONFIG_INVALID) listing every issue with its path.
 */
export function parseRoutingDocument(raw: unknown, source?: string, locate?: Locate): RoutingDocument {
  const options = source === undefined ? {} : { source };
  if (!isRecord(raw)) throw new ConfigError(['expected a routing document (an object with upstreams and services)'], options);
  const parsed = RoutingDocument.safeParse(raw, { reportInput: true });
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error, '', locate), options);
  const issues = semanticIssues(parsed.data);
  if (issues.length > 0) throw new ConfigError(issues, options);
  return deepFreeze(parsed.data);
}

/** Validates the settings part of a config (everything but the routing keys); throws `ConfigError`. */
export function parseSettings(raw: unknown, source?: string, locate?: Locate): Settings {
  const options = source === undefined ? {} : { source };
  const parsed = Settings.safeParse(raw ?? {}, { reportInput: true });
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error, '', locate), options);
  return deepFreeze(parsed.data);
}

/**
 * Splits a whole config (as parsed from a file) into settings and routing document and validates
 * both, reporting the issues of both parts together. Throws `ConfigError` (GG_CONFIG_INVALID).
 */
export function parseConfig(raw: unknown, source?: string, locate?: Locate): Omit<LoadedConfig, 'path'> {
  const options = source === undefined ? {} : { source };
  if (raw === null || raw === undefined) raw = {};
  if (!isRecord(raw)) throw new ConfigError([`expected a mapping of settings at the top level, got ${Array.isArray(raw) ? 'a list' : typeof raw}`], options);
  const settingsPart: Record<string, unknown> = {};
  const routingPart: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if ((routingKeys as string[]).includes(key)) routingPart[key] = value;
    else settingsPart[key] = value;
  }
  const issues: string[] = [];
  let settings: Settings | undefined;
  let routing: RoutingDocument | undefined;
  try {
    settings = parseSettings(settingsPart, undefined, locate);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    issues.push(...error.issues);
  }
  // `identity` alone does not make a routing document: it only says how to read callers.
  if (routingPart.upstreams !== undefined || routingPart.services !== undefined) {
    try {
      routing = parseRoutingDocument(routingPart, undefined, locate);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      issues.push(...error.issues);
    }
  } else if (routingPart.identity !== undefined) {
    issues.push('identity: given without upstreams and services; put it beside them (it belongs to the routing document)');
  }
  if (issues.length > 0 || !settings) throw new ConfigError(issues, options);
  return { settings, routing };
}

/** 1-based line and column of a character offset. */
function lineAndColumn(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let start = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      start = i + 1;
    }
  }
  return { line, col: offset - start + 1 };
}

/**
 * Where JSON.parse fails, for messages that carry no position (Node 20's "Unexpected token"):
 * the shortest prefix whose error is not "unexpected end" ends at the bad character. Binary
 * search keeps it O(n log n); this runs only on a broken file.
 */
function jsonErrorOffset(text: string): number | undefined {
  const badAt = (length: number): boolean => {
    try {
      JSON.parse(text.slice(0, length));
      return false;
    } catch (error) {
      const message = (error as Error).message;
      const position = /position (\d+)/.exec(message);
      // An error at the very end of the prefix only says the prefix is incomplete.
      if (position) return Number(position[1]) < length;
      return !/end of JSON input|Unterminated/i.test(message);
    }
  };
  if (!badAt(text.length)) return undefined;
  let low = 1;
  let high = text.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (badAt(mid)) high = mid;
    else low = mid + 1;
  }
  return low - 1;
}

/** Parses file text as JSON (when it starts with `{`) or YAML; throws GG_CONFIG_UNREADABLE with the line. */
export function parseConfigText(text: string, source: string): { raw: unknown; locate: Locate | undefined } {
  const unreadable = (issue: string, cause?: unknown) =>
    new ConfigError([issue], { code: 'GG_CONFIG_UNREADABLE', source, ...(cause === undefined ? {} : { cause }) });
  const trimmed = text.trimStart();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      return { raw: JSON.parse(text), locate: undefined };
    } catch (error) {
      // V8 quotes the whole input in some messages ("…" is not valid JSON): cut that off.
      const message = (error as Error).message.replace(/, ".*" is not valid JSON$/s, '').slice(0, 120);
      let where: { line: number; col: number } | undefined;
      const position = /position (\d+)/.exec(message);
      if (position) where = lineAndColumn(text, Number(position[1]));
      else {
        const offset = jsonErrorOffset(text);
        if (offset !== undefined) where = lineAndColumn(text, offset);
      }
      throw unreadable(`invalid JSON${where ? ` at line ${where.line}, column ${where.col}` : ''}: ${message}`, error);
    }
  }
  const lineCounter = new LineCounter();
  let document: Document.Parsed;
  try {
    document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  } catch (error) {
    throw unreadable(`invalid YAML: ${(error as Error).message}`, error);
  }
  const first = document.errors[0];
  if (first) {
    const pos = first.linePos?.[0] ?? lineCounter.linePos(first.pos[0]);
    const detail = first.message.split('\n')[0];
    throw unreadable(`invalid YAML at line ${pos.line}, column ${pos.col}: ${detail}`, first);
  }
  const locate: Locate = (at) => {
    const node = document.getIn(at as unknown[], true) as { range?: [number, number, number] } | undefined;
    if (node && node.range) return lineCounter.linePos(node.range[0]).line;
    // A missing or unknown field: point at its parent mapping, whose key exists.
    const parentPath = at.slice(0, -1) as unknown[];
    const parent = parentPath.length === 0 ? document.contents : document.getIn(parentPath, true);
    if (isMap(parent) || isSeq(parent)) {
      if (isMap(parent)) {
        const pair = parent.items.find((item) => (item.key as { value?: unknown } | null)?.value === at[at.length - 1]);
        const keyRange = (pair?.key as { range?: [number, number, number] } | undefined)?.range;
        if (keyRange) return lineCounter.linePos(keyRange[0]).line;
      }
      if (parent.range) return lineCounter.linePos(parent.range[0]).line;
    }
    return undefined;
  };
  let raw: unknown;
  try {
    raw = document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw unreadable(`invalid YAML: ${(error as Error).message}`, error);
  }
  return { raw, locate };
}

/**
 * Reads a config file (YAML or JSON, told apart by content) and validates it. Throws
 * `ConfigError`: GG_CONFIG_UNREADABLE when the file cannot be read or parsed (naming the line),
 * GG_CONFIG_INVALID with every issue when its content does not validate.
 */
export async function loadConfigFile(file: string): Promise<LoadedConfig> {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (error as Error).message;
    throw new ConfigError([`cannot read config file: ${why}`], { code: 'GG_CONFIG_UNREADABLE', source: absolute, cause: error });
  }
  const { raw, locate } = parseConfigText(text, absolute);
  const { settings, routing } = parseConfig(raw, absolute, locate);
  return { settings, routing, path: absolute };
}
