import { ApiError, api, type DrainReport, type Explanation, type ImpactResult, type ReleaseAction, type RolloutStatus, type Service } from './api.js';
import { COLORS, LiveChart } from './chart.js';
import { h, replace } from './dom.js';
import { describeCondition, stateOf } from './format.js';
import type { App } from './main.js';
import type { View } from './view.js';
import { VERSIONS, type Figures, type Version, type VersionUpstreams } from './metrics.js';

export type ServiceView = View;

/** The percentage rule's name (src/control/lifecycle.ts PERCENTAGE_RULE): `set` replaces it in place. */
const PERCENTAGE_RULE = 'percentage';
const QUICK_PERCENTS = [1, 5, 10, 25, 50, 100];

const fixed = (value: number | null, digits: number, unit: string) => (value === null ? '–' : `${value.toFixed(digits)}${unit}`);
const rate = (rps: number) => (rps >= 100 ? rps.toFixed(0) : rps.toFixed(1));

/** One service: its release and state, the live chart, the lifecycle controls, the rules, explain. */
export function renderServiceView(app: App, name: string): ServiceView | undefined {
  if (!app.state.services.some((service) => service.name === name)) return undefined;
  const chart = new LiveChart();
  const head = h('section', { class: 'service-head' });
  const controls = h('section', { class: 'card controls', 'aria-label': 'Release controls' });
  const rules = h('section', { class: 'card rules', 'aria-label': 'Rules' });
  const tiles = h('div', { class: 'tiles' });
  const chartNote = h('p', { class: 'muted small chart-note' }, 'Waiting for two metric polls…');
  let busy = false;
  let drain: DrainReport | undefined;
  const rolloutCard = h('section', { class: 'card rollout', 'aria-label': 'Rollout', hidden: true });

  /**
   * The rollout: step progress, status and why, and the live evidence against each bound (from the
   * gateway that drives it). Shown while the service has a rollout run recorded.
   */
  function renderRollout(status: RolloutStatus): void {
    const run = status.run;
    if (!run) {
      rolloutCard.hidden = true;
      return;
    }
    rolloutCard.hidden = false;
    const steps = run.plan.steps.map((step, i) =>
      h(
        'li',
        { class: `rollout-step ${i < run.step || run.status === 'done' ? 'past' : i === run.step ? 'current' : 'future'}`, 'data-testid': `rollout-step-${i + 1}` },
        step.gate ? 'gate' : step.percent !== undefined ? `${step.percent} %` : 'rules',
      ),
    );
    const evidence = status.live?.evidence ?? run.records.at(-1)?.evidence ?? [];
    replace(
      rolloutCard,
      h('div', { class: 'card-head' }, h('h2', {}, 'Rollout'), h('span', { class: `state ${run.status}`, 'data-testid': 'rollout-status' }, run.status)),
      h('p', { class: 'small' }, `${run.candidate}: step `, h('strong', { 'data-testid': 'rollout-step' }, `${run.step + 1} of ${run.plan.steps.length}`), status.live ? ` — now ${status.live.outcome}, ${Math.round(status.live.elapsedMs / 1000)} s of ${Math.round(status.live.holdMs / 1000)} s held` : ''),
      h('ol', { class: 'rollout-steps' }, steps),
      h('p', { class: 'muted small', 'data-testid': 'rollout-reason' }, run.reason),
      evidence.length === 0
        ? null
        : h(
            'table',
            { class: 'evidence', 'data-testid': 'rollout-evidence' },
            h('thead', {}, h('tr', {}, h('th', {}, 'check'), h('th', {}, 'outcome'), h('th', {}, 'candidate'), h('th', {}, 'stable'), h('th', {}, 'bound'), h('th', {}, 'samples (cand/stable)'))),
            h(
              'tbody',
              {},
              evidence.map((e) =>
                h('tr', { class: e.outcome, title: e.detail }, h('td', {}, e.metric), h('td', {}, e.outcome), h('td', {}, e.candidate === null ? '–' : String(e.candidate)), h('td', {}, e.stable === null ? '–' : String(e.stable)), h('td', {}, e.bound === null ? '–' : String(e.bound)), h('td', {}, `${e.samples.candidate}/${e.samples.stable}`)),
              ),
            ),
          ),
    );
  }

  const service = (): Service | undefined => app.state.services.find((s) => s.name === name);
  /** Each version's upstreams, for their errors and ejections. */
  const upstreams = (): VersionUpstreams | undefined => {
    const s = service();
    if (!s) return undefined;
    const candidates = s.release?.candidate !== undefined ? [s.release.candidate] : (s.release?.candidates?.map((c) => c.upstream) ?? []);
    return { stable: [s.stable], candidate: candidates };
  };

  // ---- live figures ----
  const tile = (version: Version) =>
    h(
      'div',
      { class: `tile ${version}`, 'data-version': version },
      h('div', { class: 'tile-title' }, h('span', { class: 'swatch', style: `background:${COLORS[version]}` }), version),
      h('div', { class: 'tile-main' }, h('span', { class: 'big', 'data-testid': `rps-${version}` }, '–'), h('span', { class: 'unit' }, 'req/s')),
      h(
        'dl',
        { class: 'tile-facts' },
        h('dt', {}, 'errors'),
        h('dd', { 'data-testid': `errors-${version}` }, '–'),
        h('dt', {}, 'p99'),
        h('dd', { 'data-testid': `p99-${version}` }, '–'),
        h('dt', { title: 'Failed attempts at its upstreams, last 10 s' }, 'upstream errors'),
        h('dd', { 'data-testid': `upstream-errors-${version}` }, '–'),
        h('dt', { title: 'Servers ejected by passive health, last 10 s' }, 'ejections'),
        h('dd', { 'data-testid': `ejections-${version}` }, '–'),
        ...(version === 'candidate'
          ? [h('dt', { title: 'Requests the rules sent to the candidate that stable served, last 10 s' }, 'fell back to stable'), h('dd', { 'data-testid': 'fallback-candidate' }, '–')]
          : []),
      ),
    );
  const shareTile = h(
    'div',
    { class: 'tile share' },
    h('div', { class: 'tile-title' }, 'candidate share'),
    h('div', { class: 'tile-main' }, h('span', { class: 'big', 'data-testid': 'share-candidate' }, '–'), h('span', { class: 'unit' }, '% of requests')),
    h('div', { class: 'share-bar' }, h('span', { class: 'share-fill' })),
  );
  tiles.append(tile('stable'), tile('candidate'), shareTile);

  function showFigures(figures: Figures | null): void {
    const set = (id: string, text: string) => {
      const element = tiles.querySelector(`[data-testid="${id}"]`);
      if (element) element.textContent = text;
    };
    if (!figures) return;
    for (const version of VERSIONS) {
      const f = figures[version];
      set(`rps-${version}`, rate(f.rps));
      set(`errors-${version}`, fixed(f.errorRate === null ? null : f.errorRate * 100, 1, ' %'));
      set(`p99-${version}`, fixed(f.p99 === null ? null : f.p99 * 1000, 1, ' ms'));
      set(`upstream-errors-${version}`, fixed(f.upstreamErrors, 0, ''));
      set(`ejections-${version}`, fixed(f.ejections, 0, ''));
    }
    set('fallback-candidate', fixed(figures.candidate.fallback, 0, ''));
    const total = figures.stable.rps + figures.candidate.rps;
    const share = total > 0 ? (figures.candidate.rps / total) * 100 : null;
    set('share-candidate', share === null ? '–' : share.toFixed(share >= 10 || share === 0 ? 0 : 1));
    (shareTile.querySelector('.share-fill') as HTMLElement).style.width = `${share ?? 0}%`;
    chartNote.textContent = 'Requests/s between polls (every second); error rate and p99 over the last 10 s.';
  }

  // ---- header ----
  function renderHead(): void {
    const s = service();
    if (!s) {
      replace(head, h('h1', {}, name), h('p', { class: 'muted' }, 'This service was removed from the routing document.'));
      return;
    }
    const stateName = stateOf(s.release);
    const candidate = s.release?.candidate ?? s.release?.candidates?.map((c) => `${c.upstream} (${c.weight} %)`).join(', ');
    const where = `${s.match?.host ?? 'any host'} ${s.match?.pathPrefix ?? '/'}`;
    replace(
      head,
      h('div', { class: 'title-row' }, h('h1', {}, s.name), h('span', { class: `badge big-badge ${stateName}`, 'data-testid': 'release-state' }, stateName)),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'stable'),
        h('dd', {}, h('span', { class: 'swatch', style: `background:${COLORS.stable}` }), s.stable),
        h('dt', {}, 'candidate'),
        h('dd', {}, candidate ? [h('span', { class: 'swatch', style: `background:${COLORS.candidate}` }), candidate] : h('span', { class: 'muted' }, 'none')),
        h('dt', {}, 'matches'),
        h('dd', {}, h('code', {}, where)),
        h('dt', {}, 'version'),
        h('dd', {}, `v${app.state.version}`),
      ),
    );
  }

  // ---- controls ----
  const reason = h('input', { type: 'text', class: 'reason', name: 'reason', maxlength: 500, placeholder: 'Why (kept in the history); optional', 'aria-label': 'Reason' });

  async function act(action: ReleaseAction, describe: string, extra: { candidate?: string; percentage?: number } = {}): Promise<void> {
    if (busy) return;
    busy = true;
    controls.classList.add('busy');
    controls.querySelectorAll('button').forEach((b) => (b.disabled = true));
    const why = reason.value.trim() || `dashboard: ${describe}`;
    try {
      const result = await api.act(name, action, { reason: why, version: app.state.version, ...extra });
      reason.value = '';
      app.toast(result.changed ? `v${result.version}: ${describe} (${result.from} → ${result.to})` : `Nothing to change: ${describe}`);
      await app.refresh();
    } catch (error) {
      await app.failWrite(error);
    } finally {
      busy = false;
      controls.classList.remove('busy');
      renderControls();
    }
  }

  /**
   * The impact of the percentage as set but not applied: how many callers seen recently would
   * change version, asked of the gateway a moment after the control stops moving.
   */
  function impactLine(ask: (percent: number) => Promise<ImpactResult>): { element: HTMLElement; update(percent: number): void } {
    const element = h('p', { class: 'muted impact', 'data-testid': 'impact', 'aria-live': 'polite' });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let asked = 0;
    const update = (percent: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        const mine = ++asked;
        ask(percent).then(
          (impact) => {
            if (mine !== asked) return;
            const s = impact.services.find((entry) => entry.service === name);
            const minutes = Math.round(impact.windowMs / 60_000);
            if (!impact.enabled) element.textContent = 'Impact: this gateway keeps no sample of recent callers.';
            else if (!s || s.sampled === 0) element.textContent = `Impact: no identified caller seen in the last ${minutes} min to count.`;
            else {
              const moved = s.stableToCandidate + s.candidateToStable + s.candidateToCandidate;
              element.textContent =
                `Impact at ${percent} %: ${moved} of ${s.sampled} caller(s) seen in the last ${minutes} min would change version ` +
                `(${s.stableToCandidate} to the candidate, ${s.candidateToStable} back to stable)${s.full ? ', counted on a sample' : ''}.`;
            }
          },
          (error: unknown) => {
            if (mine === asked) element.textContent = `Impact not counted: ${(error as Error).message}`;
          },
        );
      }, 250);
    };
    return { element, update };
  }

  function percentControl(current: number, apply: (percent: number) => void, label: string, ask?: (percent: number) => Promise<ImpactResult>): HTMLElement {
    const impact = ask ? impactLine(ask) : undefined;
    const slider = h('input', { type: 'range', min: 0, max: 100, step: 1, value: current, 'aria-label': 'Candidate percentage (slider)' });
    const number = h('input', { type: 'number', min: 0, max: 100, step: 0.01, value: current, class: 'percent-input', 'data-testid': 'percentage', 'aria-label': 'Candidate percentage' });
    // The track fills up to the thumb (a CSS variable: range inputs have no standard fill).
    const paint = () => slider.style.setProperty('--fill', `${slider.value}%`);
    const changed = () => {
      const percent = Number(number.value);
      if (impact && Number.isFinite(percent) && percent >= 0 && percent <= 100) impact.update(Math.round(percent * 100) / 100);
    };
    slider.addEventListener('input', () => {
      number.value = slider.value;
      paint();
      changed();
    });
    number.addEventListener('input', () => {
      slider.value = number.value;
      paint();
      changed();
    });
    paint();
    const chips = QUICK_PERCENTS.map((p) =>
      h(
        'button',
        {
          type: 'button',
          class: 'chip',
          onclick: () => {
            slider.value = String(p);
            number.value = String(p);
            paint();
            changed();
          },
        },
        `${p} %`,
      ),
    );
    return h(
      'div',
      { class: 'percent' },
      h('div', { class: 'percent-row' }, slider, h('span', { class: 'percent-box' }, number, '%')),
      h('div', { class: 'chips' }, chips),
      ...(impact ? [impact.element] : []),
      h(
        'button',
        {
          type: 'button',
          class: 'primary',
          onclick: () => {
            const percent = Number(number.value);
            if (!Number.isFinite(percent) || percent < 0 || percent > 100) return app.toast('The percentage is a number from 0 to 100', 'error');
            apply(Math.round(percent * 100) / 100);
          },
        },
        label,
      ),
    );
  }

  function renderControls(): void {
    const s = service();
    if (!s) return replace(controls);
    const stateName = stateOf(s.release);
    const rollback = h('button', { type: 'button', class: 'danger', onclick: () => act('rollback', 'roll back') }, 'Roll back');
    const body: HTMLElement[] = [];
    if (stateName === 'idle') {
      const options = app.state.upstreams.filter((u) => u !== s.stable);
      const preferred = s.release?.candidate ?? options[0];
      const select = h('select', { 'aria-label': 'Candidate upstream', name: 'candidate' }, options.map((u) => h('option', { value: u, selected: u === preferred }, u)));
      body.push(
        h('p', { class: 'muted' }, 'Everyone is on stable. Start a canary: a sticky share of identified callers goes to the candidate.'),
        h('label', { class: 'field' }, h('span', {}, 'Candidate upstream'), options.length ? select : h('span', { class: 'muted' }, 'No other upstream is defined.')),
        percentControl(
          5,
          (percentage) => act('start', `start a canary on ${select.value} at ${percentage} %`, { candidate: select.value, percentage }),
          'Start canary',
          (percentage) => api.impact(name, 'start', { candidate: select.value, percentage }),
        ),
      );
    } else if (stateName === 'canary') {
      const current = s.release?.rules.find((r) => r.name === PERCENTAGE_RULE)?.percentage?.percent ?? 0;
      body.push(
        h('p', { class: 'muted' }, 'The rules decide. Move the share of callers sent to the candidate (raising it only adds callers; lowering only removes).'),
        percentControl(current, (percentage) => act('set', `set the candidate percentage to ${percentage} %`, { percentage }), 'Apply percentage', (percentage) => api.impact(name, 'set', { percentage })),
        h(
          'div',
          { class: 'button-row' },
          h('button', { type: 'button', class: 'secondary', onclick: () => act('full', 'send everyone to the candidate') }, 'Go full'),
          rollback,
        ),
      );
    } else {
      body.push(
        h('p', { class: 'muted' }, 'Everyone is on the candidate. Update stable, then finish (back to idle, everyone on the updated stable).'),
        h(
          'p',
          { class: 'drain', 'data-testid': 'drain' },
          drain === undefined
            ? 'Checking whether stable has drained…'
            : drain.drained
              ? '✓ No request in flight that started before full: stable has drained on this gateway.'
              : `Draining: ${drain.inFlightRequests} request(s) in flight on this gateway.`,
        ),
        h('div', { class: 'button-row' }, h('button', { type: 'button', class: 'primary', onclick: () => act('finish', 'finish the release') }, 'Finish'), rollback),
      );
    }
    replace(
      controls,
      h('h2', {}, 'Release'),
      body,
      h('label', { class: 'field' }, h('span', {}, 'Reason'), reason),
      stateName !== 'canary' && stateName !== 'full' ? null : h('p', { class: 'muted small' }, 'Roll back sends everyone to stable at once; history can restore any version.'),
    );
  }

  // ---- rules ----
  function renderRules(): void {
    const s = service();
    if (!s) return replace(rules);
    const stateName = stateOf(s.release);
    const list = s.release?.rules ?? [];
    const summary =
      stateName === 'idle'
        ? 'Idle: every request goes to stable; these rules are kept for the next start.'
        : stateName === 'full'
          ? 'Full: every request goes to the candidate; the rules do not decide.'
          : 'The first matching rule decides; a request no rule matches goes to stable.';
    replace(
      rules,
      h('h2', {}, 'Rules'),
      h('p', { class: 'muted small' }, summary),
      list.length === 0
        ? h('p', { class: 'muted' }, 'No rules.')
        : h(
            'ol',
            { class: 'rule-list' },
            list.map((rule, i) =>
              h(
                'li',
                {},
                h('span', { class: 'rule-name' }, rule.name ?? `rule ${i + 1}`),
                h('span', { class: 'rule-cond' }, describeCondition(rule as unknown as Record<string, unknown>)),
                h('span', { class: `rule-to ${rule.to === 'stable' ? 'stable' : 'candidate'}` }, `→ ${rule.to}`),
              ),
            ),
          ),
      s.release ? h('p', { class: 'muted small' }, `Cache: ${s.release.cache === 'private' ? 'Cache-Control: private' : 'Vary'} on responses whose version depended on the caller.`) : null,
    );
  }

  // ---- explain ----
  const explainResult = h('div', { class: 'explain-result', 'aria-live': 'polite' });
  const first = service();
  const pathInput = h('input', { type: 'text', name: 'path', value: first?.match?.pathPrefix ?? '/', 'aria-label': 'Path' });
  const hostInput = h('input', { type: 'text', name: 'host', value: first?.match?.host && !first.match.host.startsWith('*') ? first.match.host : '', placeholder: 'any', 'aria-label': 'Host' });
  const headersInput = h('textarea', { name: 'headers', rows: 4, spellcheck: false, placeholder: 'x-user-id: 42\ncookie: uid=7', 'aria-label': 'Headers' });
  const explainForm = h(
    'form',
    {
      class: 'explain-form',
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const headers: Record<string, string> = {};
        for (const line of headersInput.value.split('\n')) {
          const at = line.indexOf(':');
          if (line.trim() === '') continue;
          if (at <= 0) return replace(explainResult, h('p', { class: 'error-text' }, `Not a header line (name: value): ${line}`));
          headers[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
        }
        try {
          const explanation = await api.explain({ path: pathInput.value || '/', ...(hostInput.value ? { host: hostInput.value } : {}), headers });
          showExplanation(explanation);
        } catch (error) {
          if (error instanceof ApiError && error.status === 401) return app.fail(error);
          replace(explainResult, h('p', { class: 'error-text' }, error instanceof ApiError ? error.message : String(error)));
        }
      },
    },
    h('div', { class: 'explain-row' }, h('label', { class: 'field' }, h('span', {}, 'Host'), hostInput), h('label', { class: 'field' }, h('span', {}, 'Path'), pathInput)),
    h('label', { class: 'field' }, h('span', {}, 'Headers, one per line'), headersInput),
    h('button', { type: 'submit', class: 'secondary' }, 'Explain'),
  );

  function showExplanation(e: Explanation): void {
    replace(
      explainResult,
      h(
        'div',
        { class: 'verdict' },
        h('span', { class: `badge big-badge ${e.version}`, 'data-testid': 'explain-version' }, e.version),
        h('span', {}, '→ ', h('strong', {}, e.upstream)),
        h('span', { class: 'muted' }, `service ${e.service} · routing v${e.routingVersion}`),
      ),
      h('p', {}, 'Decided by ', h('strong', { 'data-testid': 'explain-reason' }, e.reason), e.splitBucket !== undefined ? ` (bucket ${e.splitBucket})` : ''),
      h('p', { class: 'muted small' }, 'Identity: ', e.identity.userId !== undefined ? `${e.identity.userId} (from ${e.identity.source ?? '?'})` : 'none (anonymous)'),
      e.rules.length
        ? h(
            'ul',
            { class: 'trace' },
            e.rules.map((r) => h('li', { class: r.matched ? 'matched' : '' }, h('span', { class: 'mark' }, r.matched ? '✓' : '✗'), `${r.name} → ${r.to}`)),
          )
        : null,
    );
  }

  const element = h(
    'div',
    { class: 'service-view' },
    head,
    h(
      'section',
      { class: 'card live', 'aria-label': 'Live traffic' },
      h('div', { class: 'card-head' }, h('h2', {}, 'Live traffic'), h('span', { class: 'legend' }, VERSIONS.map((v) => h('span', { class: 'legend-item' }, h('span', { class: 'swatch', style: `background:${COLORS[v]}` }), v)))),
      tiles,
      chart.element,
      chartNote,
    ),
    rolloutCard,
    h('div', { class: 'columns' }, controls, rules),
    h('section', { class: 'card explain', 'aria-label': 'Explain' }, h('h2', {}, 'Explain a request'), h('p', { class: 'muted small' }, 'Paste a request\'s headers: see the version it gets and the rule that decides.'), h('div', { class: 'explain-body' }, explainForm, explainResult)),
  );

  const update = () => {
    renderHead();
    if (!busy) renderControls();
    renderRules();
  };
  update();
  // The chart starts from the polls already taken, so switching services does not wait.
  showFigures(app.figures.figures(name, upstreams()));

  return {
    element,
    update,
    metrics(atMs) {
      const figures = app.figures.figures(name, upstreams());
      chart.push(atMs, figures);
      showFigures(figures);
    },
    metricsUnavailable(message) {
      chartNote.textContent = `No live figures: ${message}`;
    },
    tick() {
      if (service()?.rolloutRun) void api.rollout(name).then(renderRollout).catch(() => undefined);
      if (stateOf(service()?.release) !== 'full') {
        drain = undefined;
        return;
      }
      void api
        .drain(name)
        .then((report) => {
          const changed = report.drained !== drain?.drained || report.inFlightRequests !== drain?.inFlightRequests;
          drain = report;
          if (changed && !busy) renderControls();
        })
        .catch(() => undefined);
    },
    destroy() {
      chart.destroy();
    },
  };
}
