import type { RoutingDocument, Settings } from '../config/schema.js';
import type { NormalizedForm, NormalizedSettings } from './form.js';

export type { NormalizedForm, NormalizedSettings } from './form.js';
export { FORM_FORMAT, SETTINGS_FORMAT } from './form.js';

/** What normalizing may use besides the document. */
export interface NormalizeOptions {
  /** Store values fetched for this version (e.g. the seed's `Grayscale_Range`), as compileRouting takes them. */
  storeValue?(key: string): string | undefined;
  /** The store epoch of the version, copied into the form. */
  epoch?: string;
}

/**
 * The normalized form of a validated routing document (see form.ts and docs/openresty.md).
 * Throws `GraygateError('GG_OPENRESTY_UNSUPPORTED')` naming every field the OpenResty data plane
 * cannot evaluate, and `ConfigError` when the document does not compile.
 */
export function normalizeRouting(document: RoutingDocument, version: number, options: NormalizeOptions = {}): NormalizedForm {
  void document;
  void version;
  void options;
  throw new Error('normalizeRouting: not implemented yet');
}

/** The settings the Lua evaluator reads (trusted proxies, the version header). */
export function normalizeSettings(settings: Settings): NormalizedSettings {
  void settings;
  throw new Error('normalizeSettings: not implemented yet');
}

/** `path: message` for every part of the document the OpenResty data plane cannot evaluate; empty when it can. */
export function openRestyIssues(document: RoutingDocument): string[] {
  void document;
  return [];
}
