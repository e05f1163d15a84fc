import { canonicalNumericId, type RequestFacts } from '../../src/rules/facts.js';

/** What a test request carries; everything is optional. Header names may be in any case. */
export interface FactsInit {
  method?: string;
  host?: string;
  path?: string;
  headers?: Record<string, string>;
  cookies?: Record<string, string>;
  query?: Record<string, string>;
  clientIp?: string;
  isFromTrustedProxy?: boolean;
  /** Pre-resolved identity (as if the identity chain had run); sets numericUserId too. */
  userId?: string;
  identitySource?: string;
}

/**
 * A plain, complete implementation of RequestFacts over literal values, for tests of rules,
 * strategies and identity. Not a mock: it follows the interface contract (lower-case header
 * lookup, `undefined` for missing values) exactly as the data plane adapters do.
 */
export class LiteralFacts implements RequestFacts {
  readonly method: string;
  readonly host: string;
  readonly path: string;
  readonly clientIp: string;
  readonly isFromTrustedProxy: boolean;
  userId: string | undefined;
  numericUserId: number | undefined;
  identitySource: string | undefined;
  private readonly headers: Map<string, string>;
  private readonly cookies: Map<string, string>;
  private readonly queryParams: Map<string, string>;

  constructor(init: FactsInit = {}) {
    this.method = init.method ?? 'GET';
    this.host = (init.host ?? '').toLowerCase();
    this.path = init.path ?? '/';
    this.clientIp = init.clientIp ?? '127.0.0.1';
    this.isFromTrustedProxy = init.isFromTrustedProxy ?? false;
    this.headers = new Map(Object.entries(init.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value]));
    this.cookies = new Map(Object.entries(init.cookies ?? {}));
    this.queryParams = new Map(Object.entries(init.query ?? {}));
    this.userId = init.userId;
    this.numericUserId = init.userId === undefined ? undefined : canonicalNumericId(init.userId);
    this.identitySource = init.userId === undefined ? undefined : (init.identitySource ?? 'test');
  }

  header(name: string): string | undefined {
    return this.headers.get(name);
  }

  cookie(name: string): string | undefined {
    return this.cookies.get(name);
  }

  query(name: string): string | undefined {
    return this.queryParams.get(name);
  }
}

/** Builds request facts for a test from literal values. */
export function makeFacts(init: FactsInit = {}): LiteralFacts {
  return new LiteralFacts(init);
}
