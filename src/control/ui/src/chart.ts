import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h } from './dom.js';
import type { Figures, Version } from './metrics.js';

/** Five minutes of one-second polls. */
const POINTS = 300;
export const COLORS: Record<Version, string> = { stable: '#2563eb', candidate: '#d97706' };

interface Panel {
  readonly title: string;
  readonly unit: string;
  readonly value: (figures: Figures, version: Version) => number | null;
  readonly format: (value: number) => string;
}

const panels: Panel[] = [
  { title: 'Requests / s', unit: 'req/s', value: (f, v) => f[v].rps, format: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1)) },
  { title: 'Error rate (5xx)', unit: '%', value: (f, v) => (f[v].errorRate === null ? null : f[v].errorRate! * 100), format: (v) => `${v.toFixed(v < 10 ? 1 : 0)}` },
  { title: 'p99 latency', unit: 'ms', value: (f, v) => (f[v].p99 === null ? null : f[v].p99! * 1000), format: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1)) },
];

/** Axis times as a clock (the date would only repeat itself over five minutes). */
const clock = (seconds: number) => new Date(seconds * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
/** Axis values: whole numbers as such, others with one decimal. */
const tick = (value: number) => (Number.isInteger(value) ? String(value) : value >= 10 ? value.toFixed(0) : value.toFixed(1));

/**
 * Three small uPlot charts side by side (requests/s, error rate, p99), stable and candidate in
 * each, over the last five minutes; a point per poll. Figures of versions with no traffic are gaps.
 */
export class LiveChart {
  readonly element: HTMLElement;
  private readonly plots: uPlot[] = [];
  private readonly data: { x: number[]; series: (number | null)[][][] } = { x: [], series: panels.map(() => [[], []]) };
  private readonly observer: ResizeObserver;

  constructor() {
    this.element = h('div', { class: 'charts' });
    const hosts = panels.map((panel) =>
      h('figure', { class: 'chart' }, h('figcaption', {}, panel.title, h('span', { class: 'unit' }, panel.unit)), h('div', { class: 'plot' })),
    );
    this.element.append(...hosts);
    panels.forEach((panel, i) => {
      const host = hosts[i]!.querySelector('.plot') as HTMLElement;
      const options: uPlot.Options = {
        width: 320,
        height: 150,
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { size: 6 } },
        // Room on the right for the last time label.
        padding: [8, 24, 0, 0],
        // From zero, with headroom; an idle chart still shows a 0..1 scale rather than none.
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(max ?? 0, 1) * 1.15] } },
        axes: [
          { stroke: '#6b7280', grid: { stroke: '#eef0f3', width: 1 }, ticks: { show: false }, font: '11px system-ui, sans-serif', space: 70, values: (_u, ticks) => ticks.map(clock) },
          { stroke: '#6b7280', grid: { stroke: '#eef0f3', width: 1 }, ticks: { show: false }, font: '11px system-ui, sans-serif', size: 44, values: (_u, ticks) => ticks.map(tick) },
        ],
        series: [
          {},
          { label: 'stable', stroke: COLORS.stable, width: 2, fill: 'rgba(37, 99, 235, 0.08)', points: { show: false } },
          { label: 'candidate', stroke: COLORS.candidate, width: 2, fill: 'rgba(217, 119, 6, 0.08)', points: { show: false } },
        ],
      };
      this.plots.push(new uPlot(options, [[], [], []], host));
    });
    // Each chart takes a third of the card's width, and follows it when the window resizes.
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(this.element);
  }

  private resize(): void {
    this.plots.forEach((plot) => {
      const width = Math.floor((plot.root.parentElement as HTMLElement).clientWidth);
      if (width > 0 && width !== plot.width) plot.setSize({ width, height: 150 });
    });
  }

  /** Adds one poll's figures (null before the second poll: nothing to draw yet). */
  push(atMs: number, figures: Figures | null): void {
    if (!figures) return;
    this.data.x.push(atMs / 1000);
    panels.forEach((panel, i) => {
      this.data.series[i]![0]!.push(panel.value(figures, 'stable'));
      this.data.series[i]![1]!.push(panel.value(figures, 'candidate'));
    });
    if (this.data.x.length > POINTS) {
      this.data.x.shift();
      for (const pair of this.data.series) for (const line of pair) line.shift();
    }
    this.plots.forEach((plot, i) => plot.setData([this.data.x, ...this.data.series[i]!] as uPlot.AlignedData));
    // How many points are drawn: lets a browser test see the chart move without reading pixels.
    this.element.dataset.points = String(this.data.x.length);
  }

  /** Empties the charts (another service chosen). */
  clear(): void {
    this.data.x.length = 0;
    for (const pair of this.data.series) for (const line of pair) line.length = 0;
    this.plots.forEach((plot) => plot.setData([[], [], []]));
    this.element.dataset.points = '0';
  }

  destroy(): void {
    this.observer.disconnect();
    this.plots.forEach((plot) => plot.destroy());
  }
}

export { panels as chartPanels };
