import { createHash } from 'node:crypto';

/**
 * JSON with object keys sorted at every level, so two documents with the same content give the
 * same text whatever order their keys were written in. Arrays keep their order (it is meaning).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) return inner;
    const sorted: Record<string, unknown> = {};
    for (const key of Object.keys(inner).sort()) sorted[key] = (inner as Record<string, unknown>)[key];
    return sorted;
  });
}

/** Hex sha256 of the canonical JSON of `value`: the identity of a routing document's content. */
export function contentHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}
