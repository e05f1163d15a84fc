import { isAlias, isMap, isNode, isScalar, isSeq, visit, type Document } from 'yaml';

/**
 * Writing a routing document back into a hand-kept YAML file: only the nodes whose values changed
 * are replaced, so the operator's comments and layout elsewhere survive a write from the CLI or
 * the admin API.
 */

/**
 * Makes the YAML node `node` hold `value`, changing only what differs, so comments and layout of
 * the unchanged parts of the routing keys survive a write. Returns the node to store (a new one
 * when the kinds differ). Lists are merged position by position.
 */
export function mergeNode(document: Document, node: unknown, value: unknown): unknown {
  if (isMap(node) && value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, inner]) => inner !== undefined);
    const wanted = new Set(entries.map(([key]) => key));
    for (const pair of [...node.items]) {
      const key: unknown = isScalar(pair.key) ? pair.key.value : pair.key;
      if (typeof key !== 'string' || !wanted.has(key)) node.delete(pair.key);
    }
    for (const [key, inner] of entries) {
      const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === key);
      if (pair) pair.value = mergeNode(document, pair.value, inner);
      else node.set(key, document.createNode(inner));
    }
    return node;
  }
  if (isSeq(node) && Array.isArray(value)) {
    node.items = value.map((inner: unknown, i) => (i < node.items.length ? mergeNode(document, node.items[i], inner) : document.createNode(inner)));
    return node;
  }
  if (isScalar(node) && (value === null || typeof value !== 'object')) {
    if (node.value !== value) node.value = value;
    return node;
  }
  return document.createNode(value);
}

/** Whether `node` holds anchors or aliases, which a node-by-node merge could not keep consistent. */
export function hasAnchorsOrAliases(node: unknown): boolean {
  if (!isNode(node)) return false;
  let found = node.anchor !== undefined;
  visit(node, (_key, inner) => {
    if (isAlias(inner) || (isNode(inner) && inner.anchor !== undefined)) {
      found = true;
      return visit.BREAK;
    }
    return undefined;
  });
  return found;
}
