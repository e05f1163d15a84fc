import { cookie } from '../../../src/rules/strategies/cookie.js';
import { valueTestStrategyCases } from './value-test-cases.js';

valueTestStrategyCases({
  strategy: cookie,
  kind: 'cookie',
  factsKey: 'cookies',
  noun: 'cookie',
  badName: { name: 'a b', message: 'expected a cookie name (letters, digits and token characters), got "a b"' },
});
