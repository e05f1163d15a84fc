import { query } from '../../../src/rules/strategies/query.js';
import { valueTestStrategyCases } from './value-test-cases.js';

valueTestStrategyCases({
  strategy: query,
  kind: 'query',
  factsKey: 'query',
  noun: 'query parameter',
  badName: { name: '', message: 'expected a query parameter name' },
});
