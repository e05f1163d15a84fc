import { cidr } from './cidr.js';
import { cookie } from './cookie.js';
import { header } from './header.js';
import { percentage } from './percentage.js';
import { query } from './query.js';
import { timeWindow } from './time-window.js';
import { uidList } from './uid-list.js';
import { uidModulo } from './uid-modulo.js';
import { uidRange } from './uid-range.js';

/**
 * Every strategy, by config key. The config schema, the compiler and the reference docs are
 * all built from this table: adding a strategy is its file, one line here, and its test.
 */
export const strategies = {
  uidRange,
  header,
  uidList,
  uidModulo,
  percentage,
  cookie,
  query,
  cidr,
  timeWindow,
} as const;

export type StrategyKind = keyof typeof strategies;
export const strategyKinds = Object.keys(strategies) as StrategyKind[];
