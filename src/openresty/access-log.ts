/**
 * The OpenResty data plane's access log line: nginx's own `access_log`, in a `log_format` that
 * carries what graygate's Node access log carries (service, served version, upstream, server,
 * the rule that decided, the identity source's name, never its value), as one JSON object per
 * line so the same log pipeline reads both. The path is `$uri` (no query string: a query
 * parameter may be an identity source carrying a token), and no request header is logged.
 *
 * The `$gg_*` variables are declared (empty) by the conf graygate writes and filled by the access
 * phase (the decision; `$gg_upstream` is changed by the balancer on a fallback, and `$gg_version`
 * by metrics.lua's log phase then, so the line names what served); a request answered before a
 * decision (no service matched) logs them empty. nginx writes the line after `log_by_lua`.
 */

/** The variables the log line reads, declared with `set $name "";` where requests are routed. */
export const ACCESS_LOG_VARIABLES = ['gg_service', 'gg_version', 'gg_upstream', 'gg_rule', 'gg_identity'] as const;

/**
 * The `log_format` directive (http level). Field names follow graygate's Node access log
 * (`method`, `path`, `status`, `bytes`, `service`, `version`, `upstream`, `server`, `rule`,
 * `identity`); the duration is nginx's `$request_time` in seconds (`requestTime`), where Node
 * logs milliseconds (`durationMs`).
 */
export function accessLogFormat(name = 'graygate'): string {
  const field = (key: string, value: string) => `"${key}":"${value}"`;
  const fields = [
    field('time', '$time_iso8601'),
    field('event', 'access'),
    field('method', '$request_method'),
    field('path', '$uri'),
    '"status":$status',
    '"bytes":$body_bytes_sent',
    '"requestTime":$request_time',
    field('service', '$gg_service'),
    field('version', '$gg_version'),
    field('upstream', '$gg_upstream'),
    field('server', '$upstream_addr'),
    field('rule', '$gg_rule'),
    field('identity', '$gg_identity'),
  ];
  return `log_format ${name} escape=json '{${fields.join(',')}}';`;
}

/**
 * What metrics.lua's log phase reads besides those after an internal redirect (see
 * openresty/graygate/metrics.lua): the fallback's reason.
 */
export const METRICS_VARIABLES = ['gg_fallback'] as const;

/** The data plane's own: graygate's error code, set by the balancer for the error location. */
export const DATA_PLANE_VARIABLES = ['gg_error'] as const;

/** The `set` lines that declare the variables (in each `server` or `location` that routes). */
export function accessLogVariableDeclarations(): string {
  return [...ACCESS_LOG_VARIABLES, ...METRICS_VARIABLES, ...DATA_PLANE_VARIABLES].map((name) => `set $${name} "";`).join(' ');
}
