import { request } from 'undici';
import type { ExternalCheck } from '../config/schema.js';
import type { ExternalCheckResult } from './analysis/types.js';

/** What an external check is told about the step it judges. */
export interface CheckContext {
  readonly service: string;
  readonly candidate: string;
  readonly runId: string;
  readonly step: number;
  readonly samples: { readonly candidate: number; readonly stable: number };
}

export const checkName = (check: ExternalCheck, index: number) => check.name ?? `check ${index + 1}`;

const compare = { '<': (a: number, b: number) => a < b, '<=': (a: number, b: number) => a <= b, '>': (a: number, b: number) => a > b, '>=': (a: number, b: number) => a >= b, '==': (a: number, b: number) => a === b, '!=': (a: number, b: number) => a !== b } as const;

/** The first number a Prometheus instant query answered (a scalar, or the first sample of a vector). */
function valueOf(body: unknown): number | undefined {
  const data = (body as { status?: string; data?: { resultType?: string; result?: unknown } } | null)?.data;
  if ((body as { status?: string } | null)?.status !== 'success' || !data) return undefined;
  let raw: unknown;
  if (data.resultType === 'scalar') raw = (data.result as [number, string])[1];
  else if (data.resultType === 'vector') raw = (data.result as { value: [number, string] }[])[0]?.value[1];
  const value = typeof raw === 'string' ? Number(raw) : undefined;
  return value !== undefined && Number.isFinite(value) ? value : undefined;
}

/**
 * Runs one external check. Never throws: an answer that cannot be read (a timeout, a refused
 * connection, an empty or non-numeric result) is `inconclusive`, never a pass.
 */
export async function runCheck(check: ExternalCheck, index: number, context: CheckContext): Promise<ExternalCheckResult> {
  const name = checkName(check, index);
  const signal = AbortSignal.timeout(check.timeoutMs);
  try {
    if (check.prometheus) {
      const { url, query, op, threshold } = check.prometheus;
      const metric = `prometheus ${query}`;
      const response = await request(`${url.replace(/\/+$/, '')}/api/v1/query?query=${encodeURIComponent(query)}`, { signal });
      const body = response.statusCode === 200 ? await response.body.json() : (await response.body.dump(), undefined);
      const value = valueOf(body);
      if (value === undefined) return { check: name, outcome: 'error', metric, value: null, bound: threshold, reason: `prometheus answered ${response.statusCode} without a number for ${query}` };
      const pass = compare[op](value, threshold);
      return { check: name, outcome: pass ? 'pass' : 'fail', metric, value, bound: threshold, reason: `${query} = ${value}; must be ${op} ${threshold}` };
    }
    const response = await request(check.webhook!.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: context.service, candidate: context.candidate, rollout: context.runId, step: context.step + 1, samples: context.samples }),
      signal,
    });
    await response.body.dump();
    const ok = response.statusCode >= 200 && response.statusCode < 300;
    return { check: name, outcome: ok ? 'pass' : 'fail', metric: 'webhook status', value: response.statusCode, bound: null, reason: `the webhook answered ${response.statusCode} (2xx passes)` };
  } catch (error) {
    const why = signal.aborted ? `no answer within ${check.timeoutMs} ms` : (error as Error).message;
    return { check: name, outcome: 'error', metric: check.prometheus ? `prometheus ${check.prometheus.query}` : 'webhook status', value: null, bound: check.prometheus?.threshold ?? null, reason: `could not be read (${why})` };
  }
}
