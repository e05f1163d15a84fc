import { randomBytes } from 'node:crypto';
import { canonicalNumericId, type RequestFacts } from '../rules/facts.js';
import { murmur3Utf8 } from '../rules/hash.js';
import type { CompiledService } from '../rules/snapshot.js';

/**
 * A bounded, in-memory sample of the callers this process served recently, so a proposed routing
 * change can be tried against real traffic before it is applied ("how many callers would change
 * version?"). For each sampled caller it keeps the request facts rules can read: the identity,
 * the client IP, host, path, method, and the header, cookie and query values the service's
 * current rules read.
 *
 * Privacy: the sample lives in this process's memory only. It is never written to the store, a
 * log, a metric, a file or an API answer; only counts computed over it leave the process. Entries
 * are found and evicted by a keyed hash of the id (a random key per process), so even a heap
 * listing of the index says nothing about which ids are in it without the key.
 *
 * Cost: a request with an identity pays one map lookup by service name and one keyed hash of the
 * id; a caller already in the sample refreshes a number. Only a caller new to the sample allocates
 * (one entry), and once the sample is full a new caller is admitted at random with falling
 * probability (a reservoir over the new callers), so a flood of fresh ids costs a random number
 * each and nothing more. The clock is read by a timer once a second, never per request.
 */

export interface IdentitySampleOptions {
  /** Callers not seen for this long leave the sample (and are not counted). */
  readonly windowMs: number;
  /** Distinct callers kept per service at most. */
  readonly maxPerService: number;
  /** False: record nothing (the impact answers then say the sample is off). */
  readonly enabled: boolean;
}

export const DEFAULT_IDENTITY_SAMPLE: IdentitySampleOptions = Object.freeze({ windowMs: 15 * 60_000, maxPerService: 10_000, enabled: true });

/** What a sampled caller looked like: a RequestFacts for the rules, holding copies of what they read. */
export class SampledFacts implements RequestFacts {
  readonly method: string;
  readonly host: string;
  readonly path: string;
  readonly clientIp: string;
  readonly isFromTrustedProxy: boolean;
  readonly isTls: boolean;
  userId: string | undefined;
  numericUserId: number | undefined;
  identitySource: string | undefined;
  mintedAnonymousCookie: string | undefined = undefined;

  constructor(
    facts: RequestFacts,
    private readonly headerNames: readonly string[],
    private readonly headerValues: readonly (string | undefined)[],
    private readonly cookieNames: readonly string[],
    private readonly cookieValues: readonly (string | undefined)[],
    private readonly queryNames: readonly string[],
    private readonly queryValues: readonly (string | undefined)[],
  ) {
    this.method = facts.method;
    this.host = facts.host;
    this.path = facts.path;
    this.clientIp = facts.clientIp;
    this.isFromTrustedProxy = facts.isFromTrustedProxy;
    this.isTls = facts.isTls === true;
    this.userId = facts.userId;
    this.numericUserId = facts.numericUserId ?? (facts.userId === undefined ? undefined : canonicalNumericId(facts.userId));
    this.identitySource = facts.identitySource;
  }

  header(name: string): string | undefined {
    const i = this.headerNames.indexOf(name);
    return i < 0 ? undefined : this.headerValues[i];
  }

  cookie(name: string): string | undefined {
    const i = this.cookieNames.indexOf(name);
    return i < 0 ? undefined : this.cookieValues[i];
  }

  query(name: string): string | undefined {
    const i = this.queryNames.indexOf(name);
    return i < 0 ? undefined : this.queryValues[i];
  }
}

/** The request inputs of a service's current rules that a sampled entry copies. */
export interface CapturedInputs {
  readonly headers: readonly string[];
  readonly cookies: readonly string[];
  readonly queries: readonly string[];
}

function capturedInputsOf(service: CompiledService): CapturedInputs {
  const headers = new Set<string>();
  const cookies = new Set<string>();
  const queries = new Set<string>();
  for (const rule of service.explain.rules) {
    for (const input of rule.inputs) {
      if (input.kind === 'header') headers.add(input.name);
      else if (input.kind === 'cookie') cookies.add(input.name);
      else if (input.kind === 'query') queries.add(input.name);
    }
  }
  return Object.freeze({ headers: Object.freeze([...headers]), cookies: Object.freeze([...cookies]), queries: Object.freeze([...queries]) });
}

/** One service's sampled callers: parallel arrays indexed by slot, and the keyed-hash index. */
class ServiceSample {
  compiled: CompiledService;
  captured: CapturedInputs;
  /** The index key of each slot (31 bits of one keyed hash: a small integer, kept unboxed). */
  readonly keys: number[] = [];
  /** A second, independent keyed hash of each slot's id, telling two ids with one index key apart. */
  readonly checks: number[] = [];
  readonly seen: number[] = [];
  readonly facts: SampledFacts[] = [];
  readonly index = new Map<number, number>();
  /** New callers offered since the sample was last below its bound (the reservoir's count). */
  offeredWhenFull = 0;
  /** New callers not admitted since the sample was last below its bound. */
  notSampled = 0;

  constructor(compiled: CompiledService) {
    this.compiled = compiled;
    this.captured = capturedInputsOf(compiled);
  }

  capture(facts: RequestFacts): SampledFacts {
    const { headers, cookies, queries } = this.captured;
    return new SampledFacts(
      facts,
      headers,
      headers.map((name) => facts.header(name)),
      cookies,
      cookies.map((name) => facts.cookie(name)),
      queries,
      queries.map((name) => facts.query(name)),
    );
  }

  /** Drops the entries not seen since `oldest` (moving the last slot into each freed one). */
  sweep(oldest: number): void {
    for (let i = 0; i < this.keys.length; ) {
      if (this.seen[i]! >= oldest) {
        i++;
        continue;
      }
      this.index.delete(this.keys[i]!);
      const last = this.keys.length - 1;
      if (i !== last) {
        this.keys[i] = this.keys[last]!;
        this.checks[i] = this.checks[last]!;
        this.seen[i] = this.seen[last]!;
        this.facts[i] = this.facts[last]!;
        this.index.set(this.keys[i]!, i);
      }
      this.keys.pop();
      this.checks.pop();
      this.seen.pop();
      this.facts.pop();
    }
  }
}

/** A service's sampled callers as the impact query reads them. */
export interface ServiceSampleView {
  readonly service: string;
  readonly captured: CapturedInputs;
  readonly facts: readonly SampledFacts[];
  /** True when the bound was reached in the window: the counts are from a sample, not every caller. */
  readonly full: boolean;
  /** New callers seen in the window that the full sample did not admit. */
  readonly notSampled: number;
}

const TICK_MS = 1_000;

export class IdentitySample {
  private readonly services = new Map<string, ServiceSample>();
  private readonly key1: number;
  private readonly key2: number;
  private now = Date.now();
  private ticks = 0;
  private randomState: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly options: IdentitySampleOptions = DEFAULT_IDENTITY_SAMPLE) {
    const key = randomBytes(8);
    this.key1 = key.readInt32LE(0);
    this.key2 = key.readInt32LE(4);
    this.randomState = randomBytes(4).readUInt32LE(0) & 0x3fffffff;
    if (options.enabled) {
      this.timer = setInterval(() => this.tick(), TICK_MS);
      this.timer.unref();
    }
  }

  /**
   * Records a caller the rules just decided for (the hot path). Does nothing for a request
   * without an identity.
   */
  offer(service: CompiledService, facts: RequestFacts): void {
    const id = facts.userId;
    if (id === undefined || id.length === 0 || !this.options.enabled) return;
    let sample = this.services.get(service.name);
    if (sample === undefined) this.services.set(service.name, (sample = new ServiceSample(service)));
    else if (sample.compiled !== service) this.recompiled(sample, service);
    // The index key is 31 bits of a keyed hash, so it stays a small integer (no boxed number per
    // request); a second keyed hash tells apart two callers that share one (then the newcomer is
    // left out, as if not sampled: about one caller in a million at the bound).
    const key = murmur3Utf8(id, this.key1) >>> 1;
    const check = murmur3Utf8(id, this.key2) >>> 1;
    const slot = sample.index.get(key);
    if (slot !== undefined) {
      if (sample.checks[slot] === check) sample.seen[slot] = this.now;
      else sample.notSampled++;
      return;
    }
    const size = sample.keys.length;
    if (size < this.options.maxPerService) {
      sample.index.set(key, size);
      sample.keys.push(key);
      sample.checks.push(check);
      sample.seen.push(this.now);
      sample.facts.push(sample.capture(facts));
      return;
    }
    // Full: keep a uniform sample of the new callers (reservoir: admitted with probability
    // bound / offered), replacing one at random. The random numbers are a 30-bit generator of our
    // own: Math.random's double result may be boxed (16 B a call) where this stays a small integer.
    const offered = ++sample.offeredWhenFull;
    if (this.nextRandom() % offered >= size) {
      sample.notSampled++;
      return;
    }
    const victim = this.nextRandom() % size;
    sample.notSampled++;
    sample.index.delete(sample.keys[victim]!);
    sample.index.set(key, victim);
    sample.keys[victim] = key;
    sample.checks[victim] = check;
    sample.seen[victim] = this.now;
    sample.facts[victim] = sample.capture(facts);
  }

  /** The callers seen within the window, per service (a snapshot: later requests do not change it). */
  view(now = Date.now()): ServiceSampleView[] {
    const oldest = now - this.options.windowMs;
    const views: ServiceSampleView[] = [];
    for (const [name, sample] of this.services) {
      const facts: SampledFacts[] = [];
      for (let i = 0; i < sample.keys.length; i++) if (sample.seen[i]! >= oldest) facts.push(sample.facts[i]!);
      views.push({ service: name, captured: sample.captured, facts, full: sample.offeredWhenFull > 0, notSampled: sample.notSampled });
    }
    return views;
  }

  /** A uniform integer in [0, 2^30) (a linear congruential generator: fair enough for sampling, not for secrets). */
  private nextRandom(): number {
    this.randomState = (Math.imul(this.randomState, 1_103_515_245) + 12_345) & 0x3fffffff;
    return this.randomState;
  }

  /** Stops the clock (the process is closing). */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * The service was compiled again (a new routing version). When its rules now read a header,
   * cookie or query value the entries sampled so far lack, they are dropped, so every entry
   * answers what the current rules read (an entry never claims a value it did not see).
   */
  private recompiled(sample: ServiceSample, service: CompiledService): void {
    sample.compiled = service;
    const now = capturedInputsOf(service);
    const had = sample.captured;
    const covered = (names: readonly string[], kept: readonly string[]) => names.every((name) => kept.includes(name));
    if (covered(now.headers, had.headers) && covered(now.cookies, had.cookies) && covered(now.queries, had.queries)) return;
    // Captured from now on: what the earlier rules read and what the new ones read.
    const union = (a: readonly string[], b: readonly string[]) => Object.freeze([...new Set([...a, ...b])]);
    sample.captured = Object.freeze({ headers: union(had.headers, now.headers), cookies: union(had.cookies, now.cookies), queries: union(had.queries, now.queries) });
    sample.index.clear();
    sample.keys.length = 0;
    sample.checks.length = 0;
    sample.seen.length = 0;
    sample.facts.length = 0;
    sample.offeredWhenFull = 0;
    sample.notSampled = 0;
  }

  private tick(): void {
    this.now = Date.now();
    // Sweep every 10 s: an expired entry frees its place for a new caller.
    if (++this.ticks % 10 !== 0) return;
    const oldest = this.now - this.options.windowMs;
    for (const sample of this.services.values()) {
      sample.sweep(oldest);
      if (sample.keys.length < this.options.maxPerService) {
        sample.offeredWhenFull = 0;
        sample.notSampled = 0;
      }
    }
  }
}
