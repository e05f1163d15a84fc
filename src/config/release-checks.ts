import type { RoutingDocument, Service } from './schema.js';

/** Upstream names a rule `to` may use besides a candidate's upstream name. */
const KEYWORDS = new Set(['stable', 'candidate']);

/**
 * The candidate upstreams of a release in order: `candidate` alone, or `candidates[].upstream`.
 * Weights come with them (a single `candidate` has no weight: rules alone send to it).
 */
export function candidatesOf(release: NonNullable<Service['release']>): { upstream: string; weight: number | undefined }[] {
  if (release.candidates !== undefined) return release.candidates.map((c) => ({ upstream: c.upstream, weight: c.weight }));
  return release.candidate === undefined ? [] : [{ upstream: release.candidate, weight: undefined }];
}

/** True when the document gives callers an identity some way (a source, or the anonymous cookie). */
export function hasIdentity(document: RoutingDocument): boolean {
  return document.identity.sources.length > 0 || document.identity.anonymousCookie?.enabled === true;
}

/**
 * The release checks of one service that the schema cannot make alone: candidate upstreams
 * exist, differ from stable and are not repeated; each rule's `to` names `stable`, `candidate`
 * (only with one candidate) or a candidate; `full` has one winner; a split has an identity.
 * Returns `path: message` lines.
 */
export function releaseIssues(document: RoutingDocument, service: Service, at: string, knownText: string): string[] {
  const release = service.release;
  if (!release) return [];
  const issues: string[] = [];
  const hasUpstream = (name: string) => Object.prototype.hasOwnProperty.call(document.upstreams, name);
  const check = (name: string, path: string): void => {
    if (!hasUpstream(name)) issues.push(`upstream "${name}" is not defined (${path}); known: ${knownText}`);
    else if (name === service.stable) issues.push(`${path}: "${name}" is also the stable upstream; a release needs a different upstream`);
  };
  if (release.candidate !== undefined) check(release.candidate, `${at}.release.candidate`);
  const names = new Map<string, number>();
  release.candidates?.forEach((candidate, i) => {
    const path = `${at}.release.candidates[${i}].upstream`;
    const previous = names.get(candidate.upstream);
    if (previous !== undefined) issues.push(`${path}: "${candidate.upstream}" is already a candidate (candidates[${previous}])`);
    else names.set(candidate.upstream, i);
    check(candidate.upstream, path);
  });

  const candidates = candidatesOf(release);
  const upstreams = candidates.map((c) => c.upstream);
  release.rules.forEach((rule, r) => {
    const to = rule.to;
    const path = `${at}.release.rules[${r}].to`;
    if (to === 'candidate' && candidates.length > 1) {
      issues.push(`${path}: "candidate" is ambiguous with ${candidates.length} candidates; name one: ${upstreams.join(', ')}`);
    } else if (!KEYWORDS.has(to) && !upstreams.includes(to)) {
      issues.push(`${path}: "${to}" is not a candidate of this release; expected stable, candidate or one of: ${upstreams.join(', ')}`);
    }
  });

  if (release.candidates !== undefined) {
    const weighted = release.candidates.filter((c) => c.weight > 0);
    if (release.state === 'full' && weighted.length !== 1) {
      issues.push(
        `${at}.release.state: full sends everyone to one candidate, but ${weighted.length} candidates have a weight above 0; ` +
          'keep the winner\'s weight and set the others to 0',
      );
    }
    if (release.state === 'canary' && weighted.length > 0 && !hasIdentity(document)) {
      issues.push(`${at}.release.candidates: the split reads the caller's identity, but identity.sources is empty; add one, or identity.anonymousCookie`);
    }
  }
  return issues;
}
