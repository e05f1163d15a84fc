import type { ImpactCounts } from '../../observe/impact.js';
import type { AdminClient } from './client.js';
import { print, printJson } from './output.js';

/** What `/v1/impact` answers: the counts, and the versions they go between. */
export interface ImpactReply extends ImpactCounts {
  readonly from: number;
  readonly to: number | 'proposed';
  readonly scope: string;
}

/** One line per service, for the CLI: `shop: 1000 callers sampled (15 min); 98 stable → candidate, …`. */
export function formatImpact(impact: ImpactReply): string[] {
  if (!impact.enabled) return ['impact: this gateway keeps no identity sample (identitySample.enabled is false)'];
  const minutes = Math.round(impact.windowMs / 60_000);
  if (impact.services.length === 0) return [`impact: no caller with an identity was seen in the last ${minutes} min (a service records callers once its rules read the identity)`];
  const lines: string[] = [`impact of routing version ${impact.from} → ${impact.to === 'proposed' ? 'the proposed change' : `version ${impact.to}`}, over the callers this gateway saw (counts only):`];
  for (const s of impact.services) {
    const moved = s.stableToCandidate + s.candidateToStable + s.candidateToCandidate;
    const share = s.sampled === 0 ? 0 : (100 * moved) / s.sampled;
    lines.push(
      `impact on ${s.service}: ${moved} of ${s.sampled} caller(s) seen in the last ${minutes} min would change version (${share.toFixed(1)} %): ` +
        `${s.stableToCandidate} stable → candidate, ${s.candidateToStable} candidate → stable${s.candidateToCandidate > 0 ? `, ${s.candidateToCandidate} candidate → candidate` : ''}, ${s.unchanged} unchanged`,
    );
    for (const move of s.moves) lines.push(`  ${move.from} → ${move.to}: ${move.count}`);
    if (s.full) lines.push(`  the sample is full: these are counts over a uniform sample (${s.notSampled} newer caller(s) not sampled)`);
    if (s.unobserved.length > 0) lines.push(`  not in the sample (the current rules do not read them): ${s.unobserved.join(', ')}; the proposed rules saw them absent`);
  }
  return lines;
}

/** Asks the gateway for the impact of a change (`body` as `/v1/impact` takes it) and prints it (or returns it, with --json). */
export async function fetchImpact(client: AdminClient, body: Record<string, unknown>): Promise<ImpactReply> {
  return (await client.call('POST', '/v1/impact', body)) as ImpactReply;
}

/** Prints an impact in words (or as JSON). */
export function printImpact(impact: ImpactReply, json: boolean | undefined): void {
  if (json) printJson(impact);
  else for (const line of formatImpact(impact)) print(line);
}
