import { z } from 'zod';
import { UserIdNumber } from '../../config/primitives.js';
import { MAX_USER_ID_LENGTH } from '../facts.js';
import { defineStrategy } from '../strategy.js';

/**
 * One id of an allow list: a string compared exactly, or an integer that stands for its
 * canonical decimal string (`7` matches the id "7", never "007" or "7.0").
 */
const ListedId = z.union(
  [
    z.string().min(1, { message: 'an id cannot be empty' }).max(MAX_USER_ID_LENGTH, { message: `an id is at most ${MAX_USER_ID_LENGTH} characters` }),
    UserIdNumber,
  ],
  { error: (issue) => `expected an id (a string or an integer), got ${JSON.stringify(issue.input)}` },
);

/** User id in an explicit list (allow lists of 100k ids and more). */
const UidListConfig = z
  .strictObject({
    ids: z
      .array(ListedId)
      .min(1, { message: 'give at least one id' })
      .meta({ description: 'User ids: strings compared exactly, or integers (matching their decimal form).' }),
  })
  .meta({ description: 'User id in a list. Ids are compared exactly as the identity source gives them; callers without an id never match.' });

export type UidListConfig = z.infer<typeof UidListConfig>;

/** The canonical string form of a listed id: integers in plain decimal, strings as written. */
export function canonicalListedId(id: string | number): string {
  return typeof id === 'number' ? String(id) : id;
}

/** Matches a caller whose id is in the list; the Set is built once at compile (O(1) per request). */
export const uidList = defineStrategy({
  kind: 'uidList',
  schema: UidListConfig,
  inputs: () => [{ kind: 'identity' }],
  compile({ ids }) {
    const set = new Set<string>();
    for (const id of ids) set.add(canonicalListedId(id));
    return (facts) => {
      const id = facts.userId;
      return id !== undefined && set.has(id);
    };
  },
});
