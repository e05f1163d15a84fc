import { DEFAULT_ANALYSIS_PARAMS, type AnalysisParams } from './params.js';
import type { StepAnalysis, StepInput } from './types.js';

/**
 * Judges one look at a step: candidate against stable on the figures of the same window, with
 * sequential tests valid at every look (look as often as you like; the chance that a candidate
 * within the bounds fails the step stays under `params.alpha`). Pure: no I/O, no clock.
 * - fail: some check has enough evidence that the candidate is worse than its bound (at any sample
 *   count: the tests are valid from the first request), or an external check failed;
 * - inconclusive: figures missing or unreadable, too few samples of either version (for the step,
 *   or for a check), or an external check that could not be read. Never a pass;
 * - pass: every check has its minimum samples and none failed.
 */
export function analyzeStep(input: StepInput, params: AnalysisParams = DEFAULT_ANALYSIS_PARAMS): StepAnalysis {
  void params;
  if (!input.figures.ok) {
    const reason = `figures could not be read: ${input.figures.reason}`;
    return { verdict: 'inconclusive', reason, atMs: input.nowMs, evidence: [{ check: 'figures', verdict: 'inconclusive', metric: 'figures', value: null, bound: null, candidateSamples: 0, stableSamples: 0, reason }] };
  }
  return { verdict: 'inconclusive', reason: 'not implemented yet', atMs: input.nowMs, evidence: [] };
}
