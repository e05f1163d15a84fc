import type { z } from 'zod';
import type * as Shapes from '../../api/shapes.js';
import type { MetricJson } from './metrics.js';

/**
 * The admin API as the page uses it: the same /v1 endpoints and bearer token as the CLI. Types
 * come from the API's own zod shapes (type-only imports: nothing of zod is bundled).
 */
type Out<K extends keyof typeof Shapes> = (typeof Shapes)[K] extends z.ZodType ? z.output<(typeof Shapes)[K]> : never;
export type StatusResult = Out<'StatusResult'>;
export type ServiceList = Out<'ServiceList'>;
export type Service = ServiceList['services'][number];
export type Release = NonNullable<Service['release']>;
export type Rule = Release['rules'][number];
export type UpstreamList = Out<'UpstreamList'>;
export type HistoryList = Out<'HistoryList'>;
export type HistoryEntry = HistoryList['versions'][number];
export type DiffResult = Out<'DiffResult'>;
export type ActionResult = Out<'ActionResult'>;
export type ImpactResult = Out<'ImpactResult'>;
export type WriteResult = Out<'WriteResult'>;
export type Explanation = Out<'Explanation'>;
export type ExplainBody = z.input<typeof Shapes.ExplainBody>;
export type DrainReport = Out<'DrainReport'>;
export type RolloutStatus = Out<'RolloutStatus'>;
export type ReleaseAction = 'start' | 'set' | 'full' | 'finish' | 'rollback';

const TOKEN_KEY = 'graygate.adminToken';

/** An answer other than 2xx, with the API's code and message (`{"error":{"code","message"}}`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The token typed at the login screen, kept for this tab only (sessionStorage). */
export const session = {
  token(): string | undefined {
    return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
  },
  save(token: string | undefined): void {
    if (token === undefined) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, token);
  },
};

/** Calls the API with `token` (default: the session's; null: none); throws ApiError with the API's message. */
export async function call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown, token: string | null | undefined = session.token()): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token !== undefined && token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(url, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), cache: 'no-store' });
  } catch (error) {
    throw new ApiError(0, 'NETWORK', `the admin API did not answer (${(error as Error).message})`);
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new ApiError(response.status, error?.code ?? `HTTP_${response.status}`, error?.message ?? `${response.status} ${response.statusText}`);
  }
  return parsed as T;
}

const service = (name: string) => `/v1/services/${encodeURIComponent(name)}`;

export const api = {
  /** The status with `token` (null: without one, to learn whether the API needs a token at all). */
  status: (token?: string | null) => call<StatusResult>('GET', '/v1/status', undefined, token === undefined ? session.token() : token),
  services: () => call<ServiceList>('GET', '/v1/services'),
  upstreams: () => call<UpstreamList>('GET', '/v1/upstreams'),
  metrics: () => call<MetricJson[]>('GET', '/v1/metrics'),
  history: (limit = 50) => call<HistoryList>('GET', `/v1/history?limit=${limit}`),
  diff: (from: number, to: number) => call<DiffResult>('GET', `/v1/diff?from=${from}&to=${to}`),
  drain: (name: string) => call<DrainReport>('GET', `${service(name)}/release/drain`),
  rollout: (name: string) => call<RolloutStatus>('GET', `${service(name)}/rollout`),
  explain: (body: ExplainBody) => call<Explanation>('POST', '/v1/explain', body),
  /** A release action; `version` is the one the page read, so a change made meanwhile is refused (409). */
  act: (name: string, action: ReleaseAction, body: { reason: string; version: number; candidate?: string; percentage?: number }) =>
    call<ActionResult>('POST', `${service(name)}/release/${action}`, body),
  /** How many callers seen recently a release action would move (counts only; nothing is written). */
  impact: (name: string, action: ReleaseAction, params: { candidate?: string; percentage?: number }) =>
    call<ImpactResult>('POST', '/v1/impact', { release: { service: name, action, params } }),
  restore: (version: number, body: { reason: string; version: number }) => call<WriteResult>('POST', `/v1/history/${version}/restore`, body),
};
