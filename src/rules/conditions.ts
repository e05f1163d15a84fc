import type { Condition, RoutingDocument, Rule } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { strategies, type StrategyKind } from './strategies/index.js';
import type { CompileContext, Matcher, RequestInput } from './strategy.js';

/**
 * Condition trees: a rule's condition is one strategy, or `all`/`any`/`not` of conditions. Each
 * compiles once into one matcher; a request then calls it with no allocation.
 */

const conditionCombinators = ['all', 'any', 'not'] as const;

/** The one condition key of a condition or rule object (the schema guarantees exactly one). Throws `ConfigError` when there is none. */
export function conditionKey(condition: Condition | Rule): StrategyKind | 'all' | 'any' | 'not' {
  const record = condition as Record<string, unknown>;
  for (const key of conditionCombinators) if (record[key] !== undefined) return key;
  for (const key of Object.keys(strategies) as StrategyKind[]) if (record[key] !== undefined) return key;
  throw new ConfigError(['expected one condition']);
}

const never: Matcher = () => false;

function allOf(matchers: Matcher[]): Matcher {
  if (matchers.length === 1) return matchers[0]!;
  if (matchers.length === 2) {
    const [a, b] = matchers as [Matcher, Matcher];
    return (facts) => a(facts) && b(facts);
  }
  const count = matchers.length;
  return (facts) => {
    for (let i = 0; i < count; i++) if (!matchers[i]!(facts)) return false;
    return true;
  };
}

function anyOf(matchers: Matcher[]): Matcher {
  if (matchers.length === 0) return never;
  if (matchers.length === 1) return matchers[0]!;
  if (matchers.length === 2) {
    const [a, b] = matchers as [Matcher, Matcher];
    return (facts) => a(facts) || b(facts);
  }
  const count = matchers.length;
  return (facts) => {
    for (let i = 0; i < count; i++) if (matchers[i]!(facts)) return true;
    return false;
  };
}

/** Compiles a condition into one matcher, collecting the inputs it reads into `inputs`. Throws `ConfigError` whose issues carry `path`. */
export function compileCondition(condition: Condition | Rule, path: string, context: CompileContext, inputs: RequestInput[]): Matcher {
  const key = conditionKey(condition);
  const record = condition as Record<string, unknown>;
  if (key === 'all' || key === 'any') {
    const children = (record[key] as Condition[]).map((child, i) => compileCondition(child, `${path}.${key}[${i}]`, context, inputs));
    return key === 'all' ? allOf(children) : anyOf(children);
  }
  if (key === 'not') {
    const inner = compileCondition(record.not as Condition, `${path}.not`, context, inputs);
    return (facts) => !inner(facts);
  }
  const strategy = strategies[key] as {
    compile(config: unknown, context: CompileContext): Matcher;
    inputs(config: unknown): readonly RequestInput[];
  };
  const config = record[key];
  inputs.push(...strategy.inputs(config));
  try {
    return strategy.compile(config, context);
  } catch (error) {
    const where = `${path}.${key}`;
    if (error instanceof ConfigError) {
      throw new ConfigError(
        error.issues.map((issue) => `${where}${issue.startsWith('.') || issue.startsWith('[') ? '' : ': '}${issue}`),
        { cause: error },
      );
    }
    throw new ConfigError([`${where}: ${(error as Error)?.message ?? String(error)}`], { cause: error });
  }
}

/**
 * Store keys the rules of a document read (strategy `storeKeys`, e.g. the seed's
 * `Grayscale_Range`), so the gateway can fetch and watch them before compiling. Sorted, unique.
 */
export function storeKeysOf(document: RoutingDocument): string[] {
  const keys = new Set<string>();
  const visit = (condition: Condition | Rule): void => {
    const key = conditionKey(condition);
    const record = condition as Record<string, unknown>;
    if (key === 'all' || key === 'any') for (const child of record[key] as Condition[]) visit(child);
    else if (key === 'not') visit(record.not as Condition);
    else {
      const strategy = strategies[key] as { storeKeys?(config: unknown): readonly string[] };
      for (const storeKey of strategy.storeKeys?.(record[key]) ?? []) keys.add(storeKey);
    }
  };
  for (const service of document.services) for (const rule of service.release?.rules ?? []) visit(rule);
  return [...keys].sort();
}
