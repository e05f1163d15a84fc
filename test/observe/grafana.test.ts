import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Registry, registerGatewayMetrics, registerIdentityMetrics, RequestMetrics } from '../../src/observe/metrics.js';

const dashboardPath = fileURLToPath(new URL('../../grafana/graygate-dashboard.json', import.meta.url));

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
}

/** Every metric the gateway registers, with its label names, as a scrape would show them. */
async function registeredMetrics(): Promise<Map<string, Set<string>>> {
  const registry = new Registry();
  new RequestMetrics(registry);
  registerIdentityMetrics(registry, {});
  registerGatewayMetrics(registry, {
    syncStats: () => ({ version: 1, applied: 1, refused: 0, storeErrors: 0, lastError: undefined }),
    dataPlaneStats: () => ({ openConnections: 0, inFlightRequests: 0, upstreams: {} }),
  });
  const names = new Map<string, Set<string>>();
  for (const metric of registry.getMetricsAsArray()) {
    const labels = new Set((metric as unknown as { labelNames: string[] }).labelNames);
    if (String(metric.type) === 'histogram') {
      for (const suffix of ['_bucket', '_sum', '_count']) names.set(`${metric.name}${suffix}`, suffix === '_bucket' ? new Set([...labels, 'le']) : labels);
    } else names.set(metric.name, labels);
  }
  return names;
}

describe('the Grafana dashboard (grafana/graygate-dashboard.json)', () => {
  const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as { panels: Panel[]; templating: { list: { query?: { query: string } }[] } };
  const expressions = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr })));
  for (const variable of dashboard.templating.list) if (variable.query?.query) expressions.push({ panel: 'template variable', expr: variable.query.query });

  it('uses only metrics the gateway registers, with their labels, and every registered metric somewhere', async () => {
    const metrics = await registeredMetrics();
    expect(expressions.length).toBeGreaterThan(10);
    const used = new Set<string>();
    for (const { panel, expr } of expressions) {
      const names = [...expr.matchAll(/\bgraygate_[a-z_]+/g)].map((match) => match[0]);
      expect(names.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const name of names) {
        expect(metrics.has(name), `${panel}: ${name} is not a registered metric`).toBe(true);
        used.add(name.replace(/_(bucket|sum|count)$/, ''));
        // Label matchers right after the name: {label="…", label=~"…"}
        const selector = new RegExp(`${name}\\{([^}]*)\\}`).exec(expr)?.[1] ?? '';
        for (const matcher of selector.matchAll(/([a-z_]+)\s*(?:=~|!=|!~|=)/g)) {
          expect(metrics.get(name)!.has(matcher[1]!), `${panel}: ${name} has no label ${matcher[1]}`).toBe(true);
        }
      }
      // Grouping labels must exist on every metric of the expression.
      for (const by of expr.matchAll(/by \(([^)]*)\)/g)) {
        for (const label of by[1]!.split(',').map((text) => text.trim())) {
          for (const name of names) expect(metrics.get(name)!.has(label), `${panel}: ${name} has no label ${label}`).toBe(true);
        }
      }
    }
    const registered = new Set([...metrics.keys()].map((name) => name.replace(/_(bucket|sum|count)$/, '')));
    expect([...registered].filter((name) => !used.has(name))).toEqual([]);
  });

  it('has the panels the issue asks for', () => {
    const titles = dashboard.panels.map((panel) => panel.title.toLowerCase());
    for (const wanted of ['requests per second by version', 'error rate', 'p99', 'upstream errors', 'ejections', 'fallback', 'identity lookups', 'routing version', 'config reloads', 'open connections']) {
      expect(titles.some((title) => title.includes(wanted)), wanted).toBe(true);
    }
  });
});
