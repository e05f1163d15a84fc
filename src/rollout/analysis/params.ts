import { z } from 'zod';

const Fraction = z.number().gt(0).lt(1);
const Count = z.number().int().min(0);

/** Minimum samples of each version before a check may pass. */
const MinSamples = z.strictObject({
  candidate: Count.meta({ description: 'Candidate requests in the window.' }),
  stable: Count.meta({ description: 'Stable requests in the window.' }),
});

/**
 * Parameters of the step analysis (zod: the rollout plan's config embeds it, every field defaulted).
 * Defaults were tuned with `npm run bench:analysis`; docs/rollout-analysis.md lists what they measure.
 */
export const AnalysisParams = z.strictObject({
  alpha: Fraction.max(0.2).default(0.01).meta({
    description: 'Chance that one step of a candidate exactly as good as the bounds allow is failed, over the whole step however often it is looked at; shared out between the checks.',
  }),
  minSamples: MinSamples.default({ candidate: 200, stable: 200 }).meta({ description: 'Samples per step before the step may pass.' }),
  errors: z
    .strictObject({
      relative: z.number().min(1).default(2).meta({ description: 'The candidate\'s error rate may be up to this many times stable\'s…' }),
      absolute: z.number().min(0).max(1).default(0.005).meta({ description: '…and up to this much above it (a fraction: 0.005 = 0.5 percentage points); it fails only when above both.' }),
      minSamples: MinSamples.default({ candidate: 100, stable: 100 }),
    })
    .default({ relative: 2, absolute: 0.005, minSamples: { candidate: 100, stable: 100 } }),
  latency: z
    .strictObject({
      p50Ratio: z.number().min(1).default(1.25).meta({ description: 'The candidate\'s p50 may be up to this many times stable\'s.' }),
      p99Ratio: z.number().min(1).default(1.25).meta({ description: 'The candidate\'s p99 may be up to this many times stable\'s.' }),
      minSamples: MinSamples.default({ candidate: 100, stable: 500 }).meta({ description: 'Stable needs enough samples to place its own p99.' }),
    })
    .default({ p50Ratio: 1.25, p99Ratio: 1.25, minSamples: { candidate: 100, stable: 500 } }),
});
export type AnalysisParams = z.output<typeof AnalysisParams>;
export type AnalysisParamsInput = z.input<typeof AnalysisParams>;

/** The defaults, frozen. */
export const DEFAULT_ANALYSIS_PARAMS: AnalysisParams = Object.freeze(AnalysisParams.parse({}));
