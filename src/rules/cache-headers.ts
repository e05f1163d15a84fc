import type { CacheMode } from '../config/schema.js';
import type { Decision, VersionName } from './snapshot.js';
import type { RequestInput } from './strategy.js';

/**
 * What a response must tell shared caches when its version depended on the caller: `Vary` on
 * the inputs that decided, or `Cache-Control: private`, by the release's `cache` mode. Fixed at
 * compile time into each Decision, so a request only copies them.
 */

export interface DecisionInit {
  readonly version: VersionName;
  readonly upstream: string;
  readonly candidate?: string | undefined;
  readonly reason: string;
  readonly dependsOnCaller: boolean;
  /** The `Vary` value of the inputs this decision read (undefined: none a cache can key on). */
  readonly varyValue?: string | undefined;
}

/** A frozen Decision with its cache headers fixed by the release's `cache` mode. */
export function decisionOf(service: string, cache: CacheMode, init: DecisionInit): Decision {
  const callerDependent = init.dependsOnCaller && init.varyValue !== undefined;
  return Object.freeze({
    service,
    version: init.version,
    upstream: init.upstream,
    candidate: init.version === 'candidate' ? (init.candidate ?? init.upstream) : undefined,
    reason: init.reason,
    dependsOnCaller: init.dependsOnCaller,
    vary: callerDependent && cache === 'vary' ? init.varyValue : undefined,
    cachePrivate: callerDependent && cache === 'private',
  });
}

/**
 * The `Vary` value for rules reading `inputs`: header names as they are, cookies as `Cookie`,
 * the identity as whatever the identity sources read. Query parameters need nothing (the URL is
 * already the cache key) and neither does time (it is the same for every caller). The client
 * address cannot be named in Vary, so it gives `*` (RFC 9110 §12.5.5: the response varies on
 * something other than request headers).
 */
export function varyFor(inputs: readonly RequestInput[], identityInputs: readonly RequestInput[]): string | undefined {
  return new VaryBuilder(identityInputs).add(inputs).value();
}

/**
 * `varyFor` over a growing list of inputs, rule after rule: the value is rebuilt only when a rule
 * adds a name not seen before. Rebuilding it for every rule made compiling n rules on the same
 * header cost O(n²) (10k rules: seconds).
 */
export class VaryBuilder {
  private readonly names = new Set<string>();
  private star = false;
  private cached: string | undefined;
  private stale = false;

  constructor(private readonly identityInputs: readonly RequestInput[]) {}

  add(inputs: readonly RequestInput[]): this {
    for (const input of inputs) this.addOne(input, false);
    return this;
  }

  value(): string | undefined {
    if (this.stale) {
      this.stale = false;
      this.cached = this.star ? '*' : this.names.size === 0 ? undefined : [...this.names].sort().join(', ');
    }
    return this.cached;
  }

  private addName(name: string): void {
    if (this.names.has(name)) return;
    this.names.add(name);
    this.stale = true;
  }

  private addOne(input: RequestInput, viaIdentity: boolean): void {
    switch (input.kind) {
      case 'header':
        this.addName(input.name.toLowerCase());
        break;
      case 'cookie':
        this.addName('Cookie');
        break;
      case 'query': // the URL is already part of every cache key
      case 'time': // the same for every caller at a given moment: nothing about the caller to vary on
        break;
      case 'identity':
        if (!viaIdentity) for (const inner of this.identityInputs) this.addOne(inner, true);
        break;
      default:
        if (!this.star) this.stale = true;
        this.star = true;
    }
  }
}
