import { header } from './header.js';
import { uidRange } from './uid-range.js';

/**
 * Every strategy, by config key. The config schema, the compiler and the reference docs are
 * all built from this table: adding a strategy is its file, one line here, and its test.
 */
export const strategies = {
  uidRange,
  header,
} as const;

export type StrategyKind = keyof typeof strategies;
export const strategyKinds = Object.keys(strategies) as StrategyKind[];
