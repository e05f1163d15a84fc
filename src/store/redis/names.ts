/** The keys of one routing document. The `{namespace}` hash tag puts them all in one Cluster slot. */
export interface RedisStoreKeys {
  /** JSON `{version, meta, document}` of the current version. */
  readonly doc: string;
  /** The current version number alone: what the poll reads. */
  readonly version: string;
  /** Sorted set: score = version, member = the same JSON as `doc` for that version. */
  readonly history: string;
  /** Pub/sub channel: each write publishes its new version number. */
  readonly channel: string;
  /** The epoch (see StoredVersion.epoch): a random id set when the store is seeded. */
  readonly epoch: string;
  /** Hash: field = gateway instance id, value = its load report as JSON `{at, servedVersion, …}`. */
  readonly load: string;
}

/** The keys and channel used for `namespace`. */
export function redisStoreKeys(namespace: string): RedisStoreKeys {
  const tag = `{${namespace}}`;
  return { doc: `${tag}:doc`, version: `${tag}:version`, history: `${tag}:history`, channel: `${tag}:changes`, epoch: `${tag}:epoch`, load: `${tag}:load` };
}


/** The key of the lease named `name` (e.g. `rollout`): in the same slot as the document, so a write can check it. */
export function leaseKey(keys: RedisStoreKeys, name: string): string {
  return `${keys.doc.slice(0, keys.doc.lastIndexOf(':'))}:lease:${name}`;
}

/** What a lease key holds while `holder` has it with fencing `token`. */
export function leaseValue(holder: string, token: number): string {
  return `${token} ${holder}`;
}
