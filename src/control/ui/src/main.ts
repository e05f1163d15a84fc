import './styles.css';
import { ApiError, api, session, type Service, type StatusResult } from './api.js';
import { h, replace } from './dom.js';
import { stateOf } from './format.js';
import { renderHistoryView, type HistoryView } from './history-view.js';
import { LiveFigures, sampleOf } from './metrics.js';
import { renderServiceView, type ServiceView } from './service-view.js';

/**
 * The dashboard: a login screen, then a shell with the services on the left and, on the right,
 * one service (release, live chart, controls, rules, explain) or the history. Everything goes
 * through the admin API with the token typed at login; the page keeps no state the API lacks.
 */

const METRICS_EVERY_MS = 1_000;
const STATUS_EVERY_MS = 2_000;

export interface AppState {
  /** True when the admin API takes requests without a token (no admin.tokens: loopback only). */
  noAuth: boolean;
  status: StatusResult | undefined;
  services: Service[];
  upstreams: string[];
  /** The store's version the page last read services at: the precondition of every write. */
  version: number;
}

export interface App {
  readonly state: AppState;
  readonly figures: LiveFigures;
  /** Rereads services and upstreams now (after a write, or when the store's version moved). */
  refresh(): Promise<void>;
  /** Shows a short message in the corner. */
  toast(message: string, kind?: 'ok' | 'error'): void;
  /** Reports an API error: a 401 signs out, others become an error toast. */
  fail(error: unknown): void;
  /** Reports a failed write like `fail`; a 409 (someone else wrote first) also rereads, to show what is current now. */
  failWrite(error: unknown): Promise<void>;
}

type Route = { view: 'service'; name: string | undefined } | { view: 'history' };

const root = document.getElementById('app')!;
// The placeholder's look ("Loading…") goes once the page draws.
root.className = '';

function routeOf(hash: string): Route {
  const match = /^#\/(service|history)(?:\/(.*))?$/.exec(hash);
  if (match?.[1] === 'history') return { view: 'history' };
  return { view: 'service', name: match?.[2] ? decodeURIComponent(match[2]) : undefined };
}

function logo(): SVGSVGElement {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'logo');
  svg.setAttribute('aria-hidden', 'true');
  const paths: [string, string][] = [
    ['M4 12h6l3-6h7', '#2563eb'],
    ['M10 12l3 6h7', '#d97706'],
  ];
  for (const [d, stroke] of paths) {
    const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
    path.setAttribute('d', d);
    path.setAttribute('stroke', stroke);
    path.setAttribute('stroke-width', '2.4');
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke-linecap', 'round');
    path.setAttribute('stroke-linejoin', 'round');
    svg.append(path);
  }
  return svg;
}

// ---- login ------------------------------------------------------------------------------------

function showLogin(message?: string): void {
  const error = h('p', { class: 'login-error', role: 'alert' }, message ?? '');
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'Bearer token', 'aria-label': 'Admin token' });
  const button = h('button', { type: 'submit', class: 'primary wide' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'login-card',
      onsubmit: async (event: Event) => {
        event.preventDefault();
        const token = input.value.trim();
        button.disabled = true;
        error.textContent = '';
        try {
          await api.status(token);
          session.save(token);
          enter(false);
        } catch (failure) {
          error.textContent = failure instanceof ApiError ? failure.message : String(failure);
          input.select();
        } finally {
          button.disabled = false;
        }
      },
    },
    h('div', { class: 'login-brand' }, logo(), h('span', {}, 'graygate')),
    h('h1', {}, 'Sign in to the admin API'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    error,
    button,
    h('p', { class: 'hint' }, 'One of the tokens in ', h('code', {}, 'admin.tokens'), ' of the gateway\'s config. It is kept in this browser tab only.'),
  );
  replace(root, h('div', { class: 'login' }, form));
  input.focus();
}

// ---- the signed-in shell ----------------------------------------------------------------------

let stopPolling: (() => void) | undefined;

function enter(noAuth: boolean): void {
  stopPolling?.();
  const state: AppState = { noAuth, status: undefined, services: [], upstreams: [], version: 0 };
  const figures = new LiveFigures();
  const toasts = h('div', { class: 'toasts', 'aria-live': 'polite' });
  const versions = h('span', { class: 'versions' });
  const ready = h('span', { class: 'ready' });
  const servicesNav = h('nav', { class: 'service-list', 'aria-label': 'Services' });
  const historyLink = h('a', { href: '#/history', class: 'nav-link' }, 'History');
  const main = h('main', { class: 'main' });
  let view: ServiceView | HistoryView | undefined;
  let stopped = false;

  const signOut = () => {
    session.save(undefined);
    stopPolling?.();
    showLogin();
  };

  const app: App = {
    state,
    figures,
    async refresh() {
      const [services, upstreams] = await Promise.all([api.services(), api.upstreams()]);
      state.services = services.services;
      state.version = services.version;
      state.upstreams = Object.keys(upstreams.upstreams).sort();
      renderNav();
      view?.update();
    },
    toast(message, kind = 'ok') {
      const item = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
      toasts.append(item);
      setTimeout(() => item.remove(), kind === 'error' ? 9_000 : 5_000);
    },
    fail(error) {
      if (error instanceof ApiError && error.status === 401) {
        session.save(undefined);
        stopPolling?.();
        showLogin(`Signed out: ${error.message}`);
        return;
      }
      app.toast(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error), 'error');
    },
    async failWrite(error) {
      app.fail(error);
      if (error instanceof ApiError && error.status === 409) await app.refresh().catch(() => undefined);
    },
  };

  function renderNav(): void {
    const route = routeOf(location.hash);
    replace(
      servicesNav,
      state.services.length === 0 ? h('p', { class: 'muted small' }, 'No services yet.') : null,
      state.services.map((service) => {
        const current = route.view === 'service' && route.name === service.name;
        const stateName = stateOf(service.release);
        return h(
          'a',
          { href: `#/service/${encodeURIComponent(service.name)}`, class: `nav-link${current ? ' current' : ''}`, 'aria-current': current ? 'page' : undefined },
          h('span', { class: 'nav-name' }, service.name),
          h('span', { class: `badge ${stateName}` }, stateName),
        );
      }),
    );
    historyLink.classList.toggle('current', route.view === 'history');
  }

  function show(): void {
    const route = routeOf(location.hash);
    view?.destroy();
    view = undefined;
    if (route.view === 'history') {
      view = renderHistoryView(app);
    } else {
      const name = route.name ?? state.services[0]?.name;
      if (name !== undefined && route.name === undefined) {
        history.replaceState(null, '', `#/service/${encodeURIComponent(name)}`);
      }
      view = name === undefined ? undefined : renderServiceView(app, name);
      if (!view) replace(main, h('div', { class: 'empty' }, h('h2', {}, 'No services'), h('p', {}, 'The routing document has no services yet.')));
    }
    if (view) replace(main, view.element);
    renderNav();
  }

  function renderStatus(status: StatusResult): void {
    state.status = status;
    replace(versions, 'store ', h('strong', {}, `v${status.version ?? '–'}`), ' · served ', h('strong', {}, `v${status.servedVersion ?? '–'}`), ` · ${status.storeKind} store`);
    ready.className = `ready ${status.ready ? 'up' : 'down'}`;
    replace(ready, h('span', { class: 'dot' }), status.ready ? 'ready' : 'not ready');
  }

  replace(
    root,
    h(
      'div',
      { class: 'shell' },
      h(
        'header',
        { class: 'topbar' },
        h('a', { class: 'brand', href: '#/' }, logo(), h('span', {}, 'graygate'), h('span', { class: 'brand-sub' }, 'release dashboard')),
        h('div', { class: 'topbar-right' }, versions, ready, noAuth ? h('span', { class: 'pill', title: 'admin.tokens is empty: the API listens on loopback only and takes requests without a token' }, 'no token (loopback)') : h('button', { type: 'button', class: 'ghost', onclick: signOut }, 'Sign out')),
      ),
      h('div', { class: 'layout' }, h('aside', { class: 'sidebar' }, h('h2', { class: 'side-title' }, 'Services'), servicesNav, h('h2', { class: 'side-title' }, 'Config'), historyLink), main),
      toasts,
    ),
  );

  window.onhashchange = () => show();

  // Polls: metrics every second for the chart; status every two seconds, rereading services when
  // the store's version moved (a write by the CLI, another operator or a progressive plan).
  const timers: ReturnType<typeof setTimeout>[] = [];
  let metricsMissing = false;
  const loop = (every: number, tick: () => Promise<void>) => {
    const run = async () => {
      if (stopped) return;
      await tick().catch((error: unknown) => app.fail(error));
      if (!stopped) timers.push(setTimeout(run, every));
    };
    void run();
  };
  stopPolling = () => {
    stopped = true;
    timers.forEach(clearTimeout);
    window.onhashchange = null;
    view?.destroy();
  };

  void (async () => {
    try {
      const status = await api.status();
      renderStatus(status);
      await app.refresh();
      show();
    } catch (error) {
      app.fail(error);
      return;
    }
    loop(STATUS_EVERY_MS, async () => {
      const status = await api.status();
      renderStatus(status);
      if (status.version !== null && status.version !== state.version) await app.refresh();
      view?.tick?.();
    });
    loop(METRICS_EVERY_MS, async () => {
      try {
        const metrics = await api.metrics();
        const at = Date.now();
        figures.add(sampleOf(metrics, at));
        metricsMissing = false;
        view?.metrics?.(at);
      } catch (error) {
        // A gateway without the metrics endpoint still has every other part of the dashboard.
        if (error instanceof ApiError && error.status === 404) {
          if (!metricsMissing) view?.metricsUnavailable?.(error.message);
          metricsMissing = true;
          return;
        }
        throw error;
      }
    });
  })();
}

// ---- boot -------------------------------------------------------------------------------------

async function boot(): Promise<void> {
  // Without admin.tokens the API answers without a token (loopback only): no login then.
  try {
    await api.status(null);
    session.save(undefined);
    enter(true);
    return;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) {
      replace(root, h('div', { class: 'login' }, h('div', { class: 'login-card' }, h('h1', {}, 'The admin API did not answer'), h('p', { class: 'login-error' }, String((error as Error).message)))));
      return;
    }
  }
  const saved = session.token();
  if (saved === undefined) return showLogin();
  try {
    await api.status(saved);
    enter(false);
  } catch (error) {
    session.save(undefined);
    showLogin(error instanceof ApiError ? error.message : String(error));
  }
}

void boot();
