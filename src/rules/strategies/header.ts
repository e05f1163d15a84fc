import { z } from 'zod';
import { HeaderName, RegexSource } from '../../config/primitives.js';
import { defineStrategy } from '../strategy.js';

/** A request header compared with exactly one of: present, equals, oneOf, regex. */
const HeaderConfig = z
  .strictObject({
    name: HeaderName.meta({ description: 'Header name (case-insensitive).' }),
    present: z.literal(true).optional().meta({ description: 'Matches when the header is sent at all.' }),
    equals: z.string().optional().meta({ description: 'Matches the exact value (case-sensitive).' }),
    oneOf: z.array(z.string()).min(1).optional().meta({ description: 'Matches any of these exact values.' }),
    regex: RegexSource.optional().meta({ description: 'Matches when this regular expression finds a match in the value.' }),
  })
  .superRefine((config, ctx) => {
    const given = (['present', 'equals', 'oneOf', 'regex'] as const).filter((key) => config[key] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: given.length === 0 ? 'give one of present, equals, oneOf, regex' : `give only one of ${given.join(', ')}`,
      });
    }
  })
  .meta({ description: 'A request header: present, equal to a value, one of several values, or matching a regex.' });

export type HeaderConfig = z.infer<typeof HeaderConfig>;

export const header = defineStrategy({
  kind: 'header',
  schema: HeaderConfig,
  inputs: (config) => [{ kind: 'header', name: config.name }],
  compile(config) {
    const name = config.name;
    if (config.present) return (facts) => facts.header(name) !== undefined;
    if (config.equals !== undefined) {
      const expected = config.equals;
      return (facts) => facts.header(name) === expected;
    }
    if (config.oneOf) {
      const allowed = new Set(config.oneOf);
      return (facts) => {
        const value = facts.header(name);
        return value !== undefined && allowed.has(value);
      };
    }
    const pattern = new RegExp(config.regex!);
    return (facts) => {
      const value = facts.header(name);
      return value !== undefined && pattern.test(value);
    };
  },
});
