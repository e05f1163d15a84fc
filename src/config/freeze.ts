/**
 * Freezes an object graph in place and returns it: routing documents and history entries are
 * shared by every reader (snapshots, the admin API, the store's cache), so none may change one.
 * The object is frozen before its members, so a graph that refers back to itself ends.
 */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}
