import { RoutingDocument } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';

/**
 * A schema-only routing validator, issues as `path: message` lines. Store tests can use it or
 * config/load.ts `parseRoutingDocument` (schema + semantics); the store does not care which.
 */
export function validateRouting(raw: unknown, source: string): RoutingDocument {
  const result = RoutingDocument.safeParse(raw);
  if (result.success) return result.data;
  throw new ConfigError(
    result.error.issues.map((issue) => `${issue.path.map(String).join('.') || '(top level)'}: ${issue.message}`),
    { source },
  );
}
