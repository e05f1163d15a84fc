import { z } from 'zod';
import { defineStrategy } from '../strategy.js';

/** Largest modulo served by a lookup table; above it the remainders go in a Set. */
const TABLE_LIMIT = 1 << 16;

/**
 * Numeric user id by its remainder (its last digits with a power of ten): `{ modulo: 100,
 * remainders: [0, 1, 2] }` takes ids ending in 00, 01 or 02. The remainder is of the id's
 * absolute value, so `-1201` ends in 01 like `1201` does.
 */
const UidModuloConfig = z
  .strictObject({
    modulo: z
      .number()
      .int({ message: 'expected an integer' })
      .min(2, { message: 'modulo must be at least 2' })
      .max(1_000_000_000)
      .meta({ description: 'Divisor, e.g. 100 to look at the last two digits.' }),
    remainders: z
      .array(z.number().int({ message: 'expected an integer' }).min(0, { message: 'a remainder is at least 0' }))
      .min(1, { message: 'give at least one remainder' })
      .meta({ description: 'Remainders that match, each in 0..modulo-1.' }),
  })
  .superRefine((config, ctx) => {
    const seen = new Set<number>();
    config.remainders.forEach((remainder, i) => {
      if (remainder >= config.modulo) {
        ctx.addIssue({ code: 'custom', path: ['remainders', i], message: `remainder ${remainder} is not below modulo ${config.modulo}` });
      } else if (seen.has(remainder)) {
        ctx.addIssue({ code: 'custom', path: ['remainders', i], message: `remainder ${remainder} is listed twice` });
      }
      seen.add(remainder);
    });
  })
  .meta({ description: 'Numeric user id whose remainder by `modulo` is one of `remainders` (user-id suffix). Callers without a numeric id never match.' });

export type UidModuloConfig = z.infer<typeof UidModuloConfig>;

/** Matches numeric ids by remainder; a table lookup (or Set) prepared at compile. */
export const uidModulo = defineStrategy({
  kind: 'uidModulo',
  schema: UidModuloConfig,
  inputs: () => [{ kind: 'identity' }],
  compile({ modulo, remainders }) {
    if (modulo <= TABLE_LIMIT) {
      const table = new Uint8Array(modulo);
      for (const remainder of remainders) table[remainder] = 1;
      return (facts) => {
        const id = facts.numericUserId;
        return id !== undefined && table[Math.abs(id) % modulo] === 1;
      };
    }
    const set = new Set(remainders);
    return (facts) => {
      const id = facts.numericUserId;
      return id !== undefined && set.has(Math.abs(id) % modulo);
    };
  },
});
