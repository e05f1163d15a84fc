import { existsSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../../src/config/load.js';
import { deepFreeze } from '../../../src/config/freeze.js';
import { ConfigError } from '../../../src/errors.js';
import type { RequestFacts } from '../../../src/rules/facts.js';
import { strategies } from '../../../src/rules/strategies/index.js';
import type { CompileContext, Matcher, RequestInput, Strategy } from '../../../src/rules/strategy.js';
import { documentWith } from '../../helpers/documents.js';
import { makeFacts, type FactsInit } from '../../helpers/facts.js';

/** What one strategy's contract run needs: configs it accepts and refuses, and facts to try. */
export interface StrategyContractCases {
  /** Raw configs (as a user writes them) the strategy must accept and compile. */
  valid: readonly unknown[];
  /**
   * Raw configs it must refuse, each with the path of the issue relative to the strategy key:
   * `''` for the config itself, `.ranges[1].to`, `.name`, …
   */
  invalid: readonly { config: unknown; path: string }[];
  /** Pairs that must match: proves the matcher is not constantly false. */
  factsThatMatch?: readonly { config: unknown; facts: FactsInit }[];
  /** Pairs that must not match (beyond the missing-input case). */
  factsThatDoNotMatch?: readonly { config: unknown; facts: FactsInit }[];
  /**
   * Facts lacking the input the strategy needs (no header, no identity, …): every valid config
   * must answer `false` for them, so an unknown caller is never sent to the candidate.
   */
  factsWithoutInput: readonly FactsInit[];
  /** Store values visible at compile (for strategies that read a store key). */
  storeValues?: Readonly<Record<string, string>>;
}

/** A whole routing document with one rule holding `condition` (service "svc", in canary, ids from x-user-id). */
export function documentWithCondition(condition: unknown): Record<string, unknown> {
  return documentWith(condition, { service: 'svc', state: 'canary', identitySources: [{ header: { name: 'x-user-id' } }] });
}

function contextFor(cases: StrategyContractCases): CompileContext {
  const values = cases.storeValues ?? {};
  return { storeValue: (key) => values[key], releaseSeed: 'svc' };
}

/** Arbitrary facts that carry a value for every input the config reads (and then some). */
function factsArbitrary(inputs: readonly RequestInput[]): fc.Arbitrary<FactsInit> {
  const names = (kind: 'header' | 'cookie' | 'query') =>
    inputs.flatMap((input) => (input.kind === kind ? [input.name] : []));
  const valuesFor = (keys: string[]) =>
    fc.tuple(...keys.map(() => fc.oneof(fc.string(), fc.constantFrom('1', '42', 'beta', 'on', 'true')))).map((values) =>
      Object.fromEntries(keys.map((key, i) => [key, values[i]!])),
    );
  return fc.record({
    headers: valuesFor(names('header')),
    cookies: valuesFor(names('cookie')),
    query: valuesFor(names('query')),
    userId: fc.option(fc.oneof(fc.integer({ min: -1e6, max: 1e9 }).map(String), fc.string({ minLength: 1 })), { nil: undefined }),
    clientIp: fc.oneof(fc.ipV4(), fc.constant('::1')),
    path: fc.constantFrom('/', '/a', '/api/x'),
  }) as fc.Arbitrary<FactsInit>;
}

function kebab(kind: string): string {
  return kind.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * The contract every strategy keeps: registered under its kind, bad config refused with its
 * path, the same answer for the same facts, `false` without the input it needs, and compiling
 * never mutates its config. Call it from the strategy's own test file.
 */
export function strategyContract<C>(strategy: Strategy<C>, cases: StrategyContractCases): void {
  const kind = strategy.kind;
  const compileRaw = (config: unknown): { matcher: Matcher; parsed: C } => {
    const document = parseRoutingDocument(documentWithCondition({ [kind]: config }));
    const parsed = (document.services[0]!.release!.rules[0] as Record<string, unknown>)[kind] as C;
    return { matcher: strategy.compile(parsed, contextFor(cases)), parsed };
  };

  describe(`strategy contract: ${kind}`, () => {
    it('is registered under its kind, in the kebab-case file of that kind', () => {
      expect((strategies as Record<string, unknown>)[kind]).toBe(strategy);
      const file = new URL(`../../../src/rules/strategies/${kebab(kind)}.ts`, import.meta.url);
      expect(existsSync(file), `src/rules/strategies/${kebab(kind)}.ts`).toBe(true);
    });

    it('has a description for the generated reference', () => {
      expect(typeof strategy.schema.meta()?.description).toBe('string');
    });

    it('accepts and compiles every valid config, as a rule of a whole document', () => {
      expect(cases.valid.length).toBeGreaterThan(0);
      for (const config of cases.valid) {
        const { matcher } = compileRaw(config);
        expect(typeof matcher).toBe('function');
      }
    });

    it('refuses every invalid config with an issue at its path', () => {
      expect(cases.invalid.length).toBeGreaterThan(0);
      for (const { config, path } of cases.invalid) {
        const where = `services[0].release.rules[0].${kind}${path}`;
        let error: unknown;
        try {
          parseRoutingDocument(documentWithCondition({ [kind]: config }));
        } catch (caught) {
          error = caught;
        }
        expect(error, `config ${JSON.stringify(config)} was accepted`).toBeInstanceOf(ConfigError);
        const issues = (error as ConfigError).issues;
        expect(
          issues.some((issue) => issue.startsWith(`${where}:`) || issue.includes(`(${where})`)),
          `expected an issue at ${where}, got:\n${issues.join('\n')}`,
        ).toBe(true);
      }
    });

    it('declares the request inputs it reads', () => {
      const kinds = new Set(['header', 'cookie', 'query', 'identity', 'clientIp', 'time']);
      for (const config of cases.valid) {
        const { parsed } = compileRaw(config);
        for (const input of strategy.inputs(parsed)) {
          expect(kinds.has(input.kind)).toBe(true);
          if ('name' in input) expect(input.name).toBe(input.kind === 'header' ? input.name.toLowerCase() : input.name);
        }
      }
    });

    it('answers false when the input it needs is missing', () => {
      expect(cases.factsWithoutInput.length).toBeGreaterThan(0);
      for (const config of cases.valid) {
        const { matcher } = compileRaw(config);
        for (const facts of cases.factsWithoutInput) expect(matcher(makeFacts(facts)), JSON.stringify({ config, facts })).toBe(false);
      }
    });

    it('matches and refuses the given examples', () => {
      for (const { config, facts } of cases.factsThatMatch ?? []) {
        expect(compileRaw(config).matcher(makeFacts(facts)), JSON.stringify({ config, facts })).toBe(true);
      }
      for (const { config, facts } of cases.factsThatDoNotMatch ?? []) {
        expect(compileRaw(config).matcher(makeFacts(facts)), JSON.stringify({ config, facts })).toBe(false);
      }
    });

    it('gives the same answer for the same facts, across calls and compilations', () => {
      for (const config of cases.valid) {
        const { matcher, parsed } = compileRaw(config);
        const again = strategy.compile(parsed, contextFor(cases));
        fc.assert(
          fc.property(factsArbitrary(strategy.inputs(parsed)), (init) => {
            const facts: RequestFacts = makeFacts(init);
            const first = matcher(facts);
            expect(typeof first).toBe('boolean');
            expect(matcher(facts)).toBe(first);
            expect(again(makeFacts(init))).toBe(first);
          }),
          { numRuns: 200 },
        );
      }
    });

    it('compiles a frozen config without changing it', () => {
      for (const config of cases.valid) {
        const { parsed } = compileRaw(config);
        const before = JSON.stringify(parsed);
        const frozen = deepFreeze(structuredClone(parsed));
        expect(() => strategy.compile(frozen, contextFor(cases))).not.toThrow();
        expect(JSON.stringify(frozen)).toBe(before);
      }
    });
  });
}
