/**
 * The OpenResty data plane's access log line: nginx's own `access_log`, in a `log_format` that
 * carries what graygate's Node access log carries (service, served version, upstream, server,
 * the rule that decided, the identity source's name, never its value), as one JSON object per
 * line so the same log pipeline reads both. The path is `$uri` (no query string: a query
 * parameter may be an identity source carrying a token), and no request header is logged.
 *
 * The `$graygate_*` variables are declared (empty) by the conf graygate writes and filled by the
 * access phase (openresty/graygate/metrics.lua `set_log_vars`); a request answered before a
 * decision (no service matched) logs them empty.
 */

/** The variables the log line reads, declared with `set $name "";` where requests are routed. */
export const ACCESS_LOG_VARIABLES = ['graygate_service', 'graygate_version', 'graygate_upstream', 'graygate_rule', 'graygate_identity'] as const;

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
    field('service', '$graygate_service'),
    field('version', '$graygate_version'),
    field('upstream', '$graygate_upstream'),
    field('server', '$upstream_addr'),
    field('rule', '$graygate_rule'),
    field('identity', '$graygate_identity'),
  ];
  return `log_format ${name} escape=json '{${fields.join(',')}}';`;
}

/** The `set` lines that declare the variables (in each `server` or `location` that routes). */
export function accessLogVariableDeclarations(): string {
  return ACCESS_LOG_VARIABLES.map((name) => `set $${name} "";`).join(' ');
}
