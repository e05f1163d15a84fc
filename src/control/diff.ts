import { formatPath } from '../config/issues.js';

/** One difference between two JSON values, at a path like `services[0].release.rules[1]`. */
export interface Change {
  readonly path: string;
  readonly op: 'added' | 'removed' | 'changed';
  readonly before?: unknown;
  readonly after?: unknown;
}

const isObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * The differences between two JSON values (routing documents), deepest first where they differ:
 * objects by key, arrays by index. Pure; an empty list means equal.
 */
export function diffValues(before: unknown, after: unknown, at: (string | number)[] = []): Change[] {
  if (Object.is(before, after)) return [];
  if (isObject(before) && isObject(after)) {
    const changes: Change[] = [];
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    for (const key of keys) {
      const had = Object.prototype.hasOwnProperty.call(before, key) && before[key] !== undefined;
      const has = Object.prototype.hasOwnProperty.call(after, key) && after[key] !== undefined;
      if (had && !has) changes.push({ path: formatPath([...at, key]), op: 'removed', before: before[key] });
      else if (!had && has) changes.push({ path: formatPath([...at, key]), op: 'added', after: after[key] });
      else if (had && has) changes.push(...diffValues(before[key], after[key], [...at, key]));
    }
    return changes;
  }
  if (Array.isArray(before) && Array.isArray(after)) {
    const changes: Change[] = [];
    const length = Math.max(before.length, after.length);
    for (let i = 0; i < length; i++) {
      if (i >= after.length) changes.push({ path: formatPath([...at, i]), op: 'removed', before: before[i] });
      else if (i >= before.length) changes.push({ path: formatPath([...at, i]), op: 'added', after: after[i] });
      else changes.push(...diffValues(before[i], after[i], [...at, i]));
    }
    return changes;
  }
  return [{ path: at.length === 0 ? '(document)' : formatPath(at), op: 'changed', before, after }];
}

/** A diff as text lines: `- path: old`, `+ path: new`, `~ path: old → new`. */
export function formatChanges(changes: readonly Change[]): string[] {
  const show = (value: unknown) => JSON.stringify(value);
  return changes.map((change) =>
    change.op === 'added' ? `+ ${change.path}: ${show(change.after)}` : change.op === 'removed' ? `- ${change.path}: ${show(change.before)}` : `~ ${change.path}: ${show(change.before)} → ${show(change.after)}`,
  );
}
