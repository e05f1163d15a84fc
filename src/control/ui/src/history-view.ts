import { ApiError, api, type DiffResult, type HistoryEntry } from './api.js';
import { ago, h, replace } from './dom.js';
import { compact } from './format.js';
import type { App } from './main.js';
import type { View } from './view.js';

export type HistoryView = View;

type Compare = 'previous' | 'current';

/**
 * History: every kept version with who, when and why; the diff a version made (or between it and
 * the current one); restore in one click (written as a new version, so it can be undone the same way).
 */
export function renderHistoryView(app: App): HistoryView {
  const table = h('tbody');
  const diffCard = h('section', { class: 'card diff', 'aria-label': 'Diff' });
  let entries: HistoryEntry[] = [];
  let selected: number | undefined;
  let compare: Compare = 'previous';
  let busy = false;
  let loadedAt = 0;

  async function load(): Promise<void> {
    const list = await api.history(100);
    entries = list.versions;
    loadedAt = app.state.version;
    if (selected === undefined || !entries.some((e) => e.version === selected)) selected = entries[0]?.version;
    renderTable();
    await renderDiff();
  }

  async function restore(version: number): Promise<void> {
    if (busy) return;
    busy = true;
    renderTable();
    try {
      const result = await api.restore(version, { reason: 'from the dashboard', version: app.state.version });
      app.toast(result.changed ? `v${result.version}: restored version ${version}` : `Version ${version} is what is current already`);
      selected = result.version;
      compare = 'previous';
      await app.refresh();
    } catch (error) {
      await app.failWrite(error);
    } finally {
      busy = false;
      renderTable();
    }
  }

  function renderTable(): void {
    const current = app.state.version;
    replace(
      table,
      entries.map((entry) =>
        h(
          'tr',
          {
            class: entry.version === selected ? 'selected' : '',
            'data-version': entry.version,
            onclick: (event: Event) => {
              if ((event.target as HTMLElement).closest('button')) return;
              selected = entry.version;
              renderTable();
              void renderDiff();
            },
          },
          h('td', { class: 'mono' }, `v${entry.version}`),
          h('td', { title: new Date(entry.time).toLocaleString() }, ago(entry.time)),
          h('td', {}, entry.actor),
          h('td', { class: 'reason-cell' }, entry.reason),
          h(
            'td',
            { class: 'actions' },
            entry.version === current
              ? h('span', { class: 'pill current' }, 'current')
              : h('button', { type: 'button', class: 'small secondary', disabled: busy, 'aria-label': `Restore version ${entry.version}`, onclick: () => restore(entry.version) }, 'Restore'),
          ),
        ),
      ),
    );
  }

  function diffLines(diff: DiffResult): HTMLElement {
    if (diff.changes.length === 0) return h('p', { class: 'muted' }, 'No differences.');
    return h(
      'ul',
      { class: 'diff-lines' },
      diff.changes.map((change) =>
        h(
          'li',
          { class: change.op },
          h('span', { class: 'op' }, change.op === 'added' ? '+' : change.op === 'removed' ? '−' : '~'),
          h('span', { class: 'path' }, change.path),
          change.op === 'added'
            ? h('span', { class: 'after', title: JSON.stringify(change.after) }, compact(change.after))
            : change.op === 'removed'
              ? h('span', { class: 'before', title: JSON.stringify(change.before) }, compact(change.before))
              : [h('span', { class: 'before', title: JSON.stringify(change.before) }, compact(change.before)), h('span', { class: 'arrow' }, '→'), h('span', { class: 'after', title: JSON.stringify(change.after) }, compact(change.after))],
        ),
      ),
    );
  }

  async function renderDiff(): Promise<void> {
    const entry = entries.find((e) => e.version === selected);
    if (!entry) return replace(diffCard, h('h2', {}, 'Diff'), h('p', { class: 'muted' }, 'No version kept yet.'));
    const current = app.state.version;
    const tabs = h(
      'div',
      { class: 'segmented', role: 'group', 'aria-label': 'Compare' },
      h('button', { type: 'button', class: compare === 'previous' ? 'on' : '', onclick: () => ((compare = 'previous'), void renderDiff()) }, `What v${entry.version} changed`),
      h('button', { type: 'button', class: compare === 'current' ? 'on' : '', disabled: entry.version === current, onclick: () => ((compare = 'current'), void renderDiff()) }, `Restoring v${entry.version} would change`),
    );
    const heading = [
      h('div', { class: 'card-head' }, h('h2', {}, `Version ${entry.version}`), tabs),
      h('p', { class: 'muted small' }, `${entry.actor} · ${new Date(entry.time).toLocaleString()} · ${entry.reason}`),
    ];
    const [from, to] = compare === 'current' && entry.version !== current ? [current, entry.version] : [entry.version - 1, entry.version];
    if (from < 1) return replace(diffCard, heading, h('p', { class: 'muted' }, 'The first version kept: nothing before it to compare with.'));
    const wanted = `${from}-${to}`;
    diffCard.dataset.showing = wanted;
    try {
      const diff = await api.diff(Math.min(from, to), Math.max(from, to));
      // Another selection may have started meanwhile: only the latest one draws.
      if (diffCard.dataset.showing !== wanted) return;
      // The API diffs older → newer; "restoring would change" reads current → target.
      const shown: DiffResult = from > to ? { ...diff, changes: diff.changes.map(invert) } : diff;
      replace(diffCard, heading, h('p', { class: 'diff-range mono' }, `v${from} → v${to}`), diffLines(shown));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return app.fail(error);
      replace(diffCard, heading, h('p', { class: 'error-text' }, error instanceof ApiError ? error.message : String(error)));
    }
  }

  const element = h(
    'div',
    { class: 'history-view' },
    h('section', { class: 'service-head' }, h('div', { class: 'title-row' }, h('h1', {}, 'History')), h('p', { class: 'muted' }, 'Every version of the routing document, newest first. Restore writes an earlier version again as a new one; nothing is rewritten.')),
    h(
      'div',
      { class: 'history-columns' },
      h('section', { class: 'card versions', 'aria-label': 'Versions' }, h('table', { class: 'history-table' }, h('thead', {}, h('tr', {}, h('th', {}, 'version'), h('th', {}, 'when'), h('th', {}, 'who'), h('th', {}, 'why'), h('th', {}, ''))), table)),
      diffCard,
    ),
  );
  void load().catch((error: unknown) => app.fail(error));

  return {
    element,
    update() {
      if (app.state.version !== loadedAt) void load().catch((error: unknown) => app.fail(error));
      else renderTable();
    },
    destroy() {},
  };
}

function invert(change: DiffResult['changes'][number]): DiffResult['changes'][number] {
  if (change.op === 'added') return { path: change.path, op: 'removed', before: change.after };
  if (change.op === 'removed') return { path: change.path, op: 'added', after: change.before };
  return { path: change.path, op: 'changed', before: change.after, after: change.before };
}
