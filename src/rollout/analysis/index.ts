/**
 * The rollout analysis: judges a candidate against stable from graygate's own per-version figures.
 * Pure (no I/O, no clock): the driver reads the figures and passes the time in.
 */
export { analyzeStep } from './analyze.js';
export { fleetWindow, serviceFiguresOf, addVersionFigures, parseGatewayFigures, localFleetSample, NO_FIGURES } from './fleet.js';
export { quantileMs } from './analyze.js';
export { AnalysisParams, DEFAULT_ANALYSIS_PARAMS, type AnalysisParamsInput } from './params.js';
export { LATENCY_BOUNDS_MS, LATENCY_BUCKET_COUNT, latencyBucket, bucketUpperMs, type SparseHistogram } from './histogram.js';
export type * from './types.js';
