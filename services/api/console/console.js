// The Annals console: one page, hash routes (#/streams, #/event/<id>, ...), plain
// JavaScript. Every API request carries the signed-in user's bearer token (kept in
// sessionStorage: it ends with the tab); the server's policy decides what it may see, and
// GET /api/v1/me says which pages to offer. Nothing is loaded from another origin, and
// no HTML is built from strings: text from the API goes in as text nodes.
'use strict';

// Errors of the page, for people and for the browser tests (window.annalsErrors).
window.annalsErrors = [];
window.addEventListener('error', (event) => {
  window.annalsErrors.push('error: ' + (event.message || String(event.error)));
});
window.addEventListener('unhandledrejection', (event) => {
  const reason = event.reason;
  window.annalsErrors.push('unhandled rejection: ' + (reason && reason.message ? reason.message : String(reason)));
});
document.addEventListener('securitypolicyviolation', (event) => {
  window.annalsErrors.push('content security policy: ' + event.violatedDirective + ' ' + event.blockedURI);
});
{
  const original = console.error.bind(console);
  console.error = (...args) => {
    window.annalsErrors.push('console.error: ' + args.map(String).join(' '));
    original(...args);
  };
}

const TOKEN_KEY = 'annals.token';
const PHASES = ['not_started', 'reserving', 'charging', 'confirming', 'finalising', 'confirmed', 'compensating', 'cancelled'];
const PAGE_SIZE = 50;
const HEAD_SAMPLE_MS = 3000;
const HEAD_SAMPLES_KEPT = 100; // five minutes at one sample every three seconds

// ---- DOM ------------------------------------------------------------------------------

function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

function svg(tag, attributes, ...children) {
  const element = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

function setAttributes(element, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.setAttribute('class', value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

function link(href, ...children) { return h('a', { href }, ...children); }
function json(value) { return h('pre', {}, JSON.stringify(value, null, 2)); }
function stateText(state) { return h('span', { class: 'state-' + String(state) }, String(state)); }
function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([term, value, id]) => [h('dt', {}, term), h('dd', { id }, value)]));
}
function table(headers, rows, attributes) {
  return h('div', { class: 'table' }, h('table', attributes || {},
    h('thead', {}, h('tr', {}, headers.map((header) => h('th', { scope: 'col', class: header.endsWith('#') ? 'num' : null }, header.replace(/#$/, ''))))),
    h('tbody', {}, rows)));
}
function time(text) { return text ? h('time', { datetime: text }, new Date(text).toLocaleString()) : ''; }
function eventCount(count) { return count === 1 ? '1 event' : String(count) + ' events'; }
function percent(share) { return (Math.round(share * 1000) / 10).toFixed(1) + ' %'; }

// ---- the API --------------------------------------------------------------------------

class ApiProblem extends Error {
  constructor(status, body) {
    const problem = body && typeof body === 'object' ? body : {};
    super(problem.detail || problem.title || ('HTTP ' + status));
    this.status = status;
    this.title = problem.title || ('HTTP ' + status);
    this.detail = problem.detail || (typeof body === 'string' ? body.slice(0, 300) : '');
    this.type = typeof problem.type === 'string' ? problem.type : '';
  }
}

// Whether `error` is the problem of type `slug` (`urn:annals:problem:<slug>`).
function isProblem(error, slug) {
  return error instanceof ApiProblem && error.type === 'urn:annals:problem:' + slug;
}

const session = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
};

function headers(extra) {
  const result = new Headers(extra || {});
  result.set('Accept', 'application/json, application/problem+json');
  if (session.token) result.set('Authorization', 'Bearer ' + session.token);
  return result;
}

async function api(path, options) {
  const init = Object.assign({}, options || {});
  init.headers = headers(init.headers);
  const response = await fetch(path, init);
  const type = response.headers.get('content-type') || '';
  const body = type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) throw new ApiProblem(response.status, body);
  return body;
}

function allowed(action) {
  return Boolean(session.me && session.me.allowed && session.me.allowed[action]);
}

function problemBox(error) {
  if (error && error.name === 'AbortError') return null;
  if (error instanceof ApiProblem) {
    return h('div', { class: 'problem', role: 'alert' }, h('strong', {}, error.title + ' (' + error.status + ')'), error.detail);
  }
  return h('div', { class: 'problem', role: 'alert' }, h('strong', {}, 'The request failed'), String(error && error.message ? error.message : error));
}

// ---- the current view: its timers and requests end when the route changes --------------

let view = null;

function newView() {
  if (view) view.end();
  const controller = new AbortController();
  const timers = [];
  view = {
    signal: controller.signal,
    alive: true,
    every(milliseconds, task) { timers.push(setInterval(task, milliseconds)); },
    end() {
      this.alive = false;
      timers.forEach(clearInterval);
      controller.abort();
    },
  };
  return view;
}

// Runs `load` and fills `slot` with its result, or with the problem it met.
async function fill(slot, load) {
  try {
    const content = await load();
    slot.replaceChildren(...[content].flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false));
  } catch (error) {
    const box = problemBox(error);
    if (box) slot.replaceChildren(box);
  }
}

// For a view polled again and again: fetches with `fetchData`, and draws with `render`
// only when the answer changed. A focused element with an id that is drawn again gets
// the focus back, so that a keyboard user does not lose their place.
async function refresh(slot, fetchData, render) {
  try {
    const data = await fetchData();
    const key = JSON.stringify(data);
    if (slot.dataset.drawn === key) return;
    slot.dataset.drawn = key;
    const focused = slot.contains(document.activeElement) ? document.activeElement.id : '';
    slot.replaceChildren(...[render(data)].flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false));
    if (focused) {
      const again = document.getElementById(focused);
      if (again && slot.contains(again)) again.focus();
    }
  } catch (error) {
    delete slot.dataset.drawn;
    const box = problemBox(error);
    if (box) slot.replaceChildren(box);
  }
}

// ---- routes -----------------------------------------------------------------------------

const PAGES = [
  { path: 'overview', title: 'Overview', may: () => ['log.read', 'outbox.read', 'projections.read', 'sagas.list', 'operations.slo'].some(allowed), render: overviewPage },
  { path: 'streams', title: 'Streams', may: () => allowed('streams.list'), render: streamsPage },
  { path: 'stream', title: 'Stream', may: () => allowed('streams.read'), render: streamPage, hidden: true },
  { path: 'event', title: 'Event', may: () => allowed('events.read'), render: eventPage, hidden: true },
  { path: 'live', title: 'Live tail', may: () => allowed('log.follow'), render: livePage },
  { path: 'read-models', title: 'Read models', may: () => allowed('projections.read'), render: readModelsPage },
  { path: 'sagas', title: 'Sagas', may: () => allowed('sagas.list') || allowed('sagas.read'), render: sagasPage },
  { path: 'saga', title: 'Saga', may: () => allowed('sagas.read'), render: sagaPage, hidden: true },
  { path: 'relay', title: 'Relay and dependencies', may: () => allowed('outbox.read') || allowed('operations.dependencies'), render: relayPage },
];

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [pathPart, queryPart] = hash.split('?');
  const [page, ...rest] = pathPart.split('/');
  return {
    page: page || 'overview',
    argument: rest.length ? decodeURIComponent(rest.join('/')) : null,
    query: new URLSearchParams(queryPart || ''),
  };
}

function go(page, argument, query) {
  let hash = '#/' + page;
  if (argument !== null && argument !== undefined) hash += '/' + encodeURIComponent(argument);
  const search = query ? new URLSearchParams(Object.entries(query).filter(([, value]) => value !== '' && value !== null && value !== undefined)).toString() : '';
  if (search) hash += '?' + search;
  return hash;
}

function renderNav(current) {
  const nav = document.getElementById('nav');
  nav.replaceChildren(...PAGES.filter((page) => !page.hidden && session.me && page.may()).map((page) =>
    h('a', { href: go(page.path), 'aria-current': page.path === current ? 'page' : null, 'data-page': page.path }, page.title)));
  const who = document.getElementById('who');
  if (!session.me) { who.replaceChildren(); return; }
  const name = session.me.authenticated ? (session.me.subject || 'signed in') + (session.me.roles && session.me.roles.length ? ' (' + session.me.roles.join(', ') + ')' : '') : 'no authentication';
  who.replaceChildren(h('span', { id: 'subject' }, name), session.token ? h('button', { type: 'button', id: 'sign-out', onclick: signOut }, 'Sign out') : null);
}

function route() {
  const current = newView();
  const main = document.getElementById('main');
  if (!session.me) { signInPage(main); renderNav(null); return; }
  const { page, argument, query } = parseRoute();
  renderNav(page);
  const home = location.hash.replace(/^#\/?/, '') === '';
  if (home && !PAGES[0].may()) {
    const offered = PAGES.filter((candidate) => !candidate.hidden && candidate.may());
    main.replaceChildren(h('h1', {}, 'Annals console'), offered.length
      ? h('ul', { id: 'offered' }, offered.map((candidate) => h('li', {}, link(go(candidate.path), candidate.title))))
      : h('p', { id: 'nothing-offered', class: 'notice' }, 'Your token’s roles allow none of the console’s pages.'));
    return;
  }
  const found = PAGES.find((candidate) => candidate.path === page);
  main.replaceChildren();
  if (!found) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'The console has no page ', h('code', {}, page), '.'));
    return;
  }
  document.title = found.title + ' · Annals';
  if (!found.may()) {
    main.append(h('h1', {}, found.title), h('p', { class: 'notice', id: 'not-permitted' }, 'Your token is not permitted to see this page.'));
    return;
  }
  found.render(main, argument, query, current);
}

// ---- signing in -------------------------------------------------------------------------

function signInPage(main, problem) {
  document.title = 'Sign in · Annals';
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'inline', id: 'sign-in', onsubmit: async (submitted) => {
    submitted.preventDefault();
    session.token = input.value.trim();
    sessionStorage.setItem(TOKEN_KEY, session.token);
    await start();
  } },
  h('label', {}, 'Bearer token', input),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  main.replaceChildren(
    h('h1', {}, 'Sign in'),
    h('p', { id: 'token-help', class: 'muted' }, 'Paste a token (', h('code', {}, 'annals token mint'), ' or your identity provider). It is kept in this tab only and sent with every request.'),
    problem ? problemBox(problem) : null,
    form);
  input.focus();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.me = null;
  stopHeadSampler();
  location.hash = '#/';
  route();
}

async function start() {
  try {
    const me = await api('/api/v1/me');
    // Without a token, a server with authentication allows nothing: ask for one.
    const anything = Object.values(me.allowed || {}).some(Boolean);
    if (!session.token && !me.authenticated && !anything) {
      session.me = null;
      renderNav(null);
      newView();
      signInPage(document.getElementById('main'));
      return;
    }
    session.me = me;
  } catch (error) {
    session.me = null;
    const main = document.getElementById('main');
    renderNav(null);
    newView();
    if (error instanceof ApiProblem && error.status === 401) {
      if (session.token) { sessionStorage.removeItem(TOKEN_KEY); session.token = null; signInPage(main, error); } else signInPage(main);
    } else {
      main.replaceChildren(h('h1', {}, 'The console cannot start'), problemBox(error));
    }
    return;
  }
  startHeadSampler();
  route();
}

// ---- the log head, sampled while signed in, for the overview's chart ---------------------

const headSamples = [];
let headTimer = null;

async function sampleHead() {
  try {
    const page = await api('/api/v1/log?from=0&limit=1');
    headSamples.push({ at: Date.now(), position: page.next_position });
    if (headSamples.length > HEAD_SAMPLES_KEPT) headSamples.shift();
    document.dispatchEvent(new CustomEvent('annals:head'));
  } catch (error) {
    document.dispatchEvent(new CustomEvent('annals:head', { detail: error }));
  }
}

function startHeadSampler() {
  stopHeadSampler();
  if (!allowed('log.read')) return;
  sampleHead();
  headTimer = setInterval(sampleHead, HEAD_SAMPLE_MS);
}

function stopHeadSampler() {
  if (headTimer) clearInterval(headTimer);
  headTimer = null;
  headSamples.length = 0;
}

function rateChart() {
  const width = 300;
  const height = 80;
  const rates = [];
  for (let i = 1; i < headSamples.length; i++) {
    const seconds = (headSamples[i].at - headSamples[i - 1].at) / 1000;
    rates.push(seconds > 0 ? (headSamples[i].position - headSamples[i - 1].position) / seconds : 0);
  }
  const top = Math.max(1, ...rates);
  // The samples kept fill the width (until there are HEAD_SAMPLES_KEPT of them).
  const step = width / Math.max(1, rates.length - 1);
  const points = rates.map((rate, i) => [width - (rates.length - 1 - i) * step, height - 12 - (rate / top) * (height - 24)]);
  const line = points.map(([x, y]) => x.toFixed(1) + ',' + y.toFixed(1)).join(' ');
  const last = rates.length ? rates[rates.length - 1] : 0;
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': `Events per second over the last minutes; now ${last.toFixed(1)}, at most ${top.toFixed(1)}` },
    svg('line', { class: 'axis', x1: 0, y1: height - 12, x2: width, y2: height - 12 }),
    points.length > 1 ? svg('polygon', { class: 'area', points: `${points[0][0]},${height - 12} ${line} ${points[points.length - 1][0]},${height - 12}` }) : null,
    points.length > 1 ? svg('polyline', { class: 'line', points: line }) : null,
  );
  const span = rates.length ? Math.round((headSamples[headSamples.length - 1].at - headSamples[0].at) / 1000) : 0;
  return [chart, h('p', { class: 'muted', id: 'rate' }, rates.length
    ? `Events per second over the last ${span} s: now ${last.toFixed(1)}, at most ${top.toFixed(1)} (the top of the chart).`
    : `Sampling the head every ${HEAD_SAMPLE_MS / 1000} s…`)];
}

// ---- overview ---------------------------------------------------------------------------

function overviewPage(main, _argument, _query, current) {
  main.append(h('h1', {}, 'Overview'));
  const grid = h('div', { class: 'grid' });
  main.append(grid);
  const card = (title, id) => {
    const body = h('div', { id }, h('p', { class: 'muted' }, 'Loading…'));
    grid.append(h('section', { class: 'card', 'aria-labelledby': id + '-title' }, h('h2', { id: id + '-title' }, title), body));
    return body;
  };
  if (allowed('log.read')) {
    const log = card('Log', 'log-card');
    const draw = (event) => {
      if (!current.alive) { document.removeEventListener('annals:head', draw); return; }
      if (event && event.detail) { const box = problemBox(event.detail); if (box) log.replaceChildren(box); return; }
      const head = headSamples.length ? headSamples[headSamples.length - 1].position : null;
      if (head === null) return;
      log.replaceChildren(facts([['Head (next position)', String(head), 'log-head'], ['Events', String(head)]]), ...rateChart());
    };
    document.addEventListener('annals:head', draw);
    draw();
  }
  const ready = card('Readiness', 'ready-card');
  const loadReady = () => refresh(ready, () => api('/readyz', { signal: current.signal }), (answer) => {
    return facts([
      ['Status', stateText(answer.status), 'ready-status'],
      ['Index lag', eventCount(answer.index_lag), 'index-lag'],
      ['Indexed up to', String(answer.indexed_position)],
      answer.outbox ? ['Relay', stateText(answer.outbox.status)] : null,
    ]);
  });
  const relayCard = allowed('outbox.read') ? card('Relay', 'relay-card') : null;
  const loadRelay = () => relayCard && refresh(relayCard, () => api('/api/v1/outbox', { signal: current.signal }), relayFacts);
  const modelsCard = allowed('projections.read') ? card('Read models', 'models-card') : null;
  const loadModels = () => modelsCard && refresh(modelsCard, () => api('/api/v1/projections', { signal: current.signal }), ({ projections }) => {
    return table(['Read model', 'State', 'Lag#'], projections.map((model) =>
      h('tr', {}, h('td', {}, model.name), h('td', {}, stateText(model.state)), h('td', { class: 'num' }, String(model.lag)))));
  });
  const sagasCard = allowed('sagas.list') ? card('Sagas by phase', 'sagas-card') : null;
  const loadSagas = () => sagasCard && refresh(sagasCard, () => Promise.all(PHASES.map(async (phase) => {
    const page = await api('/api/v1/sagas/fulfilment?' + new URLSearchParams({ phase, limit: PAGE_SIZE }), { signal: current.signal });
    return [phase, page.next_after ? PAGE_SIZE + '+' : String(page.instances.length)];
  })), (counts) => {
    return table(['Phase', 'Instances#'], counts.map(([phase, count]) =>
      h('tr', {}, h('td', {}, link(go('sagas', null, { phase }), phase)), h('td', { class: 'num', 'data-phase': phase }, count))));
  });
  const sloCard = allowed('operations.slo') ? card('Service level objectives', 'slo-card') : null;
  const loadSlo = () => sloCard && refresh(sloCard, () => api('/api/v1/slo', { signal: current.signal }), ({ objectives }) => {
    return table(['Objective', 'Budget left#', 'Alert'], objectives.map((objective) =>
      h('tr', {}, h('td', { title: objective.sli }, objective.name), h('td', { class: 'num' }, percent(objective.error_budget_remaining)), h('td', {}, stateText(objective.alert)))));
  });
  const loadAll = () => { loadReady(); loadRelay(); loadModels(); loadSagas(); loadSlo(); };
  loadAll();
  current.every(5000, loadAll);
}

function relayFacts(outbox) {
  if (!outbox.enabled) return h('p', { id: 'relay-off' }, 'This server runs no outbox relay (no --nats-url).');
  const relay = outbox.relay;
  return facts([
    ['Health', [stateText(outbox.health.status), outbox.health.reason ? ' — ' + outbox.health.reason : ''], 'relay-health'],
    ['State', relay.state + (relay.connected ? ', connected' : ', not connected'), 'relay-state'],
    ['Breaker', stateText(relay.breaker), 'relay-breaker'],
    ['Checkpoint', String(relay.checkpoint), 'relay-checkpoint'],
    ['Log head', String(relay.log_head)],
    ['Backlog', eventCount(relay.backlog), 'relay-backlog'],
    ['Published', String(relay.published) + ' since the start'],
    relay.last_error ? ['Last error', [relay.last_error, ' ', time(relay.last_error_at)]] : null,
  ]);
}

// ---- streams ----------------------------------------------------------------------------

function streamsPage(main, _argument, query, current) {
  const category = query.get('category') || '';
  const prefix = query.get('prefix') || '';
  const after = query.get('after') || '';
  const categoryInput = h('input', { name: 'category', id: 'category', value: category, placeholder: 'order' });
  const prefixInput = h('input', { name: 'prefix', id: 'prefix', value: prefix, placeholder: 'order-0193', class: 'wide' });
  main.append(h('h1', {}, 'Streams'),
    h('form', { class: 'inline', id: 'stream-search', onsubmit: (submitted) => {
      submitted.preventDefault();
      location.hash = go('streams', null, { category: categoryInput.value.trim(), prefix: prefixInput.value.trim() });
    } },
    h('label', {}, 'Category', categoryInput),
    h('label', {}, 'Id starts with', prefixInput),
    h('button', { type: 'submit', class: 'primary' }, 'Search')));
  const results = h('div', { id: 'stream-results' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(results);
  fill(results, async () => {
    const { found, next } = prefix ? await searchPrefix(prefix, after, current) : await listCategory(category, after, current);
    const rows = found.map((head) => h('tr', {},
      h('td', {}, link(go('stream', head.stream), head.stream)),
      h('td', { class: 'num' }, String(head.last_version + 1))));
    return [
      found.length ? table(['Stream', 'Events#'], rows, { id: 'streams-table' }) : h('p', { id: 'no-streams' }, 'No streams match.'),
      h('div', { class: 'actions' },
        after ? link(go('streams', null, { category, prefix }), 'First page') : null,
        next ? link(go('streams', null, { category, prefix, after: next }), 'Next page') : null),
    ];
  });
}

async function listCategory(category, after, current) {
  const params = { limit: PAGE_SIZE };
  if (category) params.category = category;
  if (after) params.after = after;
  const page = await api('/api/v1/streams?' + new URLSearchParams(params), { signal: current.signal });
  return { found: page.streams, next: page.next_after };
}

// Streams sort by id, so the ones starting with `prefix` are one run: start just before
// it and page on until an id no longer starts with it.
async function searchPrefix(prefix, after, current) {
  const category = prefix.includes('-') ? prefix.slice(0, prefix.indexOf('-')) : null;
  let cursor = after || justBefore(prefix);
  const found = [];
  for (let requests = 0; requests < 20; requests++) {
    const params = { limit: PAGE_SIZE };
    if (category) params.category = category;
    if (cursor) params.after = cursor;
    const page = await api('/api/v1/streams?' + new URLSearchParams(params), { signal: current.signal });
    for (const head of page.streams) {
      if (head.stream < prefix) continue;
      if (!head.stream.startsWith(prefix)) return { found, next: null };
      found.push(head);
      if (found.length === PAGE_SIZE) return { found, next: head.stream };
    }
    if (!page.next_after) return { found, next: null };
    cursor = page.next_after;
  }
  return { found, next: found.length ? found[found.length - 1].stream : cursor };
}

// A stream id sorting just before `prefix` (the last character one lower), or none.
function justBefore(prefix) {
  const last = prefix.charCodeAt(prefix.length - 1);
  const lower = prefix.slice(0, -1) + String.fromCharCode(last - 1);
  if (last > 0x21 && lower.trim() === lower) return lower;
  return prefix.length > 1 ? prefix.slice(0, -1) : null;
}

// ---- one stream -------------------------------------------------------------------------

function streamPage(main, id, query, current) {
  const from = Number(query.get('from') || 0);
  main.append(h('h1', {}, 'Stream ', h('code', { id: 'stream-id' }, id || '')));
  const body = h('div', { id: 'stream-body' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(body);
  if (!id) { body.replaceChildren(h('p', {}, 'No stream named.')); return; }
  fill(body, async () => {
    const page = await api('/api/v1/streams/' + encodeURIComponent(id) + '?' + new URLSearchParams({ from, limit: PAGE_SIZE }), { signal: current.signal });
    const rows = page.events.map((recorded) => eventRows(recorded, id));
    return [
      facts([['Events', String(page.last_version + 1), 'stream-count'], ['Category', id.split('-')[0]]]),
      table(['Version#', 'Type', 'Position#', 'Recorded', 'Principal'], rows, { id: 'events-table' }),
      h('div', { class: 'actions' },
        from > 0 ? link(go('stream', id, { from: Math.max(0, from - PAGE_SIZE) }), 'Earlier events') : null,
        page.next_from <= page.last_version ? link(go('stream', id, { from: page.next_from }), 'Later events') : null),
    ];
  });
}

function eventRows(recorded, streamId) {
  const stateSlot = h('div', { class: 'state-at' });
  const stateButton = allowed('streams.read') ? h('button', { type: 'button', class: 'state-at-button', onclick: () => fill(stateSlot, async () => {
    const answer = await api('/api/v1/streams/' + encodeURIComponent(streamId) + '/state?' + new URLSearchParams({ version: recorded.version }));
    return [h('p', {}, `State of ${answer.stream} at version ${answer.version}:`), json(answer.state)];
  }) }, 'State at this version') : null;
  return [
    h('tr', { 'data-version': recorded.version },
      h('td', { class: 'num' }, String(recorded.version)),
      h('td', {}, allowed('events.read') ? link(go('event', recorded.id), recorded.type) : recorded.type),
      h('td', { class: 'num' }, String(recorded.position)),
      h('td', {}, time(recorded.recorded_at)),
      h('td', {}, recorded.metadata.principal || '')),
    h('tr', {}, h('td', { colspan: 5 }, h('details', {},
      h('summary', {}, 'Payload and metadata'),
      h('h3', {}, 'Payload'), json(recorded.payload),
      h('h3', {}, 'Metadata'), json(recorded.metadata),
      stateButton, stateSlot))),
  ];
}

// ---- one event and its correlation ------------------------------------------------------

function traceId(traceparent) {
  const parts = (traceparent || '').split('-');
  return parts.length === 4 ? parts[1] : null;
}

function eventPage(main, id, _query, current) {
  main.append(h('h1', {}, 'Event ', h('code', {}, id || '')));
  const body = h('div', { id: 'event-body' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(body);
  fill(body, async () => {
    const recorded = await api('/api/v1/events/' + encodeURIComponent(id), { signal: current.signal });
    const metadata = recorded.metadata || {};
    const correlation = h('div', { id: 'correlation' });
    if (metadata.correlation_id && allowed('correlations.read')) {
      fill(correlation, async () => {
        let answer;
        try {
          answer = await api('/api/v1/correlations/' + encodeURIComponent(metadata.correlation_id) + '?limit=200', { signal: current.signal });
        } catch (error) {
          // A server started without --correlations keeps no correlation index: not an
          // error of this page, a note saying how to keep one.
          if (isProblem(error, 'correlations-not-kept')) return h('p', { class: 'muted', id: 'correlations-not-kept' }, error.detail);
          throw error;
        }
        return [
          table(['Position#', 'Stream', 'Type', 'Recorded'], answer.events.map((other) => h('tr', { class: other.id === recorded.id ? 'this-event' : null },
            h('td', { class: 'num' }, String(other.position)),
            h('td', {}, allowed('streams.read') ? link(go('stream', other.stream), other.stream) : other.stream),
            h('td', {}, other.id === recorded.id ? h('strong', {}, other.type) : link(go('event', other.id), other.type)),
            h('td', {}, time(other.recorded_at)))), { id: 'correlation-table' }),
          answer.more ? h('p', { class: 'muted' }, 'More events share this correlation id than are shown.') : null,
        ];
      });
    }
    return [
      facts([
        ['Type', recorded.type, 'event-type'],
        ['Stream', allowed('streams.read') ? link(go('stream', recorded.stream), recorded.stream) : recorded.stream, 'event-stream'],
        ['Version', String(recorded.version)],
        ['Position', String(recorded.position)],
        ['Recorded', time(recorded.recorded_at)],
        ['Principal', metadata.principal || '—'],
        ['Correlation id', metadata.correlation_id || '—', 'correlation-id'],
        ['Trace id', traceId(metadata.traceparent) || '—', 'trace-id'],
      ]),
      h('h2', {}, 'Payload'), json(recorded.payload),
      h('h2', {}, 'Metadata'), json(metadata),
      metadata.correlation_id ? [h('h2', {}, 'Events of this correlation'), allowed('correlations.read') ? correlation : h('p', { class: 'muted' }, 'Your token may not read correlations.')] : null,
    ];
  });
}

// ---- the live tail ----------------------------------------------------------------------

function livePage(main, _argument, _query, current) {
  const shown = [];
  let lastId = null;
  let paused = false;
  let reader = null;
  const status = h('p', { id: 'live-status', role: 'status' }, 'Connecting…');
  const categoryInput = h('input', { id: 'live-category', placeholder: 'order' });
  const typeInput = h('input', { id: 'live-type', placeholder: 'OrderPlaced' });
  const list = h('ul', { class: 'live-list', id: 'live-events' });
  const pause = h('button', { type: 'button', id: 'live-pause', onclick: () => { paused ? resume() : stop(); } }, 'Pause');
  const passes = (recorded) => {
    const category = categoryInput.value.trim();
    const type = typeInput.value.trim();
    return (!category || recorded.stream.split('-')[0] === category) && (!type || recorded.type === type);
  };
  const item = (recorded) => h('li', { 'data-position': recorded.position },
    h('span', { class: 'mono' }, String(recorded.position)), ' ',
    allowed('events.read') ? link(go('event', recorded.id), recorded.type) : recorded.type, ' on ',
    allowed('streams.read') ? link(go('stream', recorded.stream), recorded.stream) : recorded.stream, ' ',
    h('span', { class: 'muted' }, time(recorded.recorded_at)));
  // Newest first, at most 200 shown; a new event is added on top (nothing focused moves).
  const draw = () => { list.replaceChildren(...shown.filter(passes).slice(-200).reverse().map(item)); };
  const add = (recorded) => {
    if (!passes(recorded)) return;
    list.prepend(item(recorded));
    while (list.children.length > 200) list.lastElementChild.remove();
  };
  categoryInput.addEventListener('input', draw);
  typeInput.addEventListener('input', draw);
  main.append(h('h1', {}, 'Live tail'),
    h('div', { class: 'inline actions' }, h('label', {}, 'Category', categoryInput), h('label', {}, 'Event type', typeInput), pause),
    status, list);

  const controller = new AbortController();
  current.signal.addEventListener('abort', () => controller.abort());
  let connection = null;
  function stop() {
    paused = true;
    pause.textContent = 'Resume';
    if (connection) connection.abort();
    status.textContent = 'Paused' + (lastId !== null ? ' after position ' + lastId : '') + '.';
  }
  function resume() {
    paused = false;
    pause.textContent = 'Pause';
    connect();
  }
  async function connect() {
    connection = new AbortController();
    const signal = connection.signal;
    controller.signal.addEventListener('abort', () => connection.abort());
    const extra = lastId !== null ? { 'Last-Event-ID': String(lastId) } : {};
    try {
      const response = await fetch('/api/v1/log/live', { headers: headers(extra), signal });
      if (!response.ok) {
        const type = response.headers.get('content-type') || '';
        throw new ApiProblem(response.status, type.includes('json') ? await response.json() : await response.text());
      }
      status.textContent = lastId !== null ? 'Following the log after position ' + lastId + '.' : 'Following the log: new events appear here.';
      status.setAttribute('data-connected', 'true');
      reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          handle(parseSse(block));
        }
      }
      if (!paused && current.alive) status.textContent = 'The server ended the stream.';
    } catch (error) {
      if (error && error.name === 'AbortError') return;
      status.replaceChildren(problemBox(error));
    } finally {
      status.removeAttribute('data-connected');
    }
  }
  function handle(message) {
    if (!message.data) return;
    if (message.event === 'error') {
      let body = null;
      try { body = JSON.parse(message.data); } catch (_) { body = message.data; }
      status.replaceChildren(problemBox(new ApiProblem(body && body.status ? body.status : 500, body)));
      return;
    }
    const recorded = JSON.parse(message.data);
    if (message.id) lastId = Number(message.id);
    shown.push(recorded);
    if (shown.length > 1000) shown.splice(0, shown.length - 1000);
    add(recorded);
  }
  connect();
}

// One Server-Sent Events message: its event, id and data lines.
function parseSse(block) {
  const message = { event: 'message', id: null, data: '' };
  const data = [];
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') message.event = value;
    else if (field === 'id') message.id = value;
  }
  message.data = data.join('\n');
  return message;
}

// ---- read models ------------------------------------------------------------------------

function readModelsPage(main, _argument, _query, current) {
  main.append(h('h1', {}, 'Read models'));
  const body = h('div', { id: 'models', class: 'grid' }, h('p', { class: 'muted' }, 'Loading…'));
  const messages = h('div', { id: 'rebuild-messages', role: 'status' });
  main.append(messages, body);
  const rebuilding = new Map(); // name -> build being made
  const faultEvents = new Map(); // position -> the id of the event a model failed on, looked up once
  const load = () => refresh(body, async () => {
    const { projections } = await api('/api/v1/projections', { signal: current.signal });
    const unknown = projections.filter((model) => model.state === 'faulted' && model.fault_position !== null && !faultEvents.has(model.fault_position));
    await Promise.all(unknown.map(async (model) => {
      const found = await eventAt(model.fault_position, current);
      if (found) faultEvents.set(model.fault_position, found.id);
    }));
    return { projections, rebuilding: [...rebuilding], faultEvents: [...faultEvents] };
  }, ({ projections }) => {
    for (const model of projections) {
      const build = rebuilding.get(model.name);
      if (build !== undefined && !model.rebuild && model.active_build >= build) {
        rebuilding.delete(model.name);
        messages.append(h('p', { id: 'rebuilt-' + model.name, 'data-checkpoint': model.checkpoint },
          `${model.name}: build ${build} took over; checkpoint ${model.checkpoint}.`));
      }
    }
    return projections.map((model) => modelCard(model, rebuilding, messages, load, faultEvents.get(model.fault_position)));
  });
  load();
  current.every(1000, load);
}

// The event at `position` in the log (its id, for a link), or null if it cannot be read.
async function eventAt(position, current) {
  if (!allowed('log.read') || !allowed('events.read')) return null;
  try {
    const page = await api('/api/v1/log?' + new URLSearchParams({ from: position, limit: 1 }), { signal: current.signal });
    const found = page.events[0];
    return found && found.position === position ? found : null;
  } catch (_) {
    return null; // the fault is shown without the link; the next poll asks again
  }
}

function modelCard(model, rebuilding, messages, reload, faultEventId) {
  const rebuild = model.rebuild;
  const progress = rebuild ? h('p', {}, `Rebuilding (version ${rebuild.version}, build ${rebuild.build}): `,
    h('progress', { max: Math.max(1, model.head), value: rebuild.checkpoint, 'aria-label': 'Rebuild progress' }),
    ` ${rebuild.checkpoint} of ${model.head}`,
    rebuild.fault_position !== null && rebuild.fault_position !== undefined ? h('span', { class: 'state-faulted' }, ` — faulted at position ${rebuild.fault_position}`) : null) : null;
  const position = model.fault_position;
  const eventName = (model.fault_event_type || 'the event') + (position !== null ? ` at position ${position}` : '');
  const fault = model.state === 'faulted' ? h('div', { class: 'problem', id: 'fault-' + model.name },
    h('strong', {}, 'Faulted' + (position !== null ? ` at position ${position}` : '')),
    h('p', {}, 'It stopped on ',
      faultEventId ? h('a', { href: go('event', faultEventId), id: 'fault-event-' + model.name }, eventName) : eventName,
      model.fault_stream ? [' in ', allowed('streams.read') ? link(go('stream', model.fault_stream), model.fault_stream) : model.fault_stream] : null,
      '. Once the cause is fixed, retry it: ', h('code', {}, `annals read-models retry ${model.name}`), '.'),
    model.fault_error ? h('div', {}, h('code', { id: 'fault-error-' + model.name }, model.fault_error)) : null) : null;
  // While a rebuild runs the button says so with aria-disabled rather than disabled: a
  // disabled button would lose the keyboard focus.
  const busy = rebuilding.has(model.name) || Boolean(rebuild);
  const button = allowed('projections.rebuild') ? h('button', {
    type: 'button', id: 'rebuild-' + model.name, 'aria-disabled': busy ? 'true' : null,
    onclick: async (clicked) => {
      const pressed = clicked.currentTarget;
      if (pressed.getAttribute('aria-disabled') === 'true') return;
      pressed.setAttribute('aria-disabled', 'true');
      try {
        const started = await api('/api/v1/projections/' + encodeURIComponent(model.name) + '/rebuild', { method: 'POST' });
        rebuilding.set(model.name, started.build);
        messages.append(h('p', {}, `${model.name}: rebuild started (build ${started.build}).`));
      } catch (error) {
        pressed.removeAttribute('aria-disabled');
        const box = problemBox(error);
        if (box) messages.append(box);
      }
      reload();
    } }, 'Rebuild ', h('span', { class: 'visually-hidden' }, model.name)) : null;
  return h('section', { class: 'card', 'data-model': model.name, 'aria-labelledby': 'model-' + model.name },
    h('h2', { id: 'model-' + model.name }, model.name, ' ', stateText(model.state)),
    facts([
      ['Checkpoint', String(model.checkpoint), 'checkpoint-' + model.name],
      ['Log head', String(model.head)],
      ['Lag', eventCount(model.lag), 'lag-' + model.name],
      ['Version', `${model.version} (active ${model.active_version ?? '—'}, build ${model.active_build ?? '—'})`],
      model.parked ? ['Parked', eventCount(model.parked)] : null,
    ]),
    fault, progress, h('div', { class: 'actions' }, button));
}

// ---- sagas ------------------------------------------------------------------------------

function sagasPage(main, _argument, query, current) {
  main.append(h('h1', {}, 'Sagas'));
  const orderInput = h('input', { id: 'saga-order', class: 'wide', placeholder: 'order id' });
  if (allowed('sagas.read')) {
    main.append(h('form', { class: 'inline', onsubmit: (submitted) => {
      submitted.preventDefault();
      if (orderInput.value.trim()) location.hash = go('saga', orderInput.value.trim());
    } }, h('label', {}, 'Open the saga of order', orderInput), h('button', { type: 'submit' }, 'Open')));
  }
  if (!allowed('sagas.list')) return;
  const phase = query.get('phase') || 'reserving';
  const after = query.get('after') || '';
  const select = h('select', { id: 'saga-phase', onchange: () => { location.hash = go('sagas', null, { phase: select.value }); } },
    PHASES.map((name) => h('option', { value: name, selected: name === phase }, name)));
  main.append(h('label', {}, 'Phase', select));
  const body = h('div', { id: 'saga-list' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(body);
  fill(body, async () => {
    const params = { phase, limit: PAGE_SIZE };
    if (after) params.after = after;
    const page = await api('/api/v1/sagas/fulfilment?' + new URLSearchParams(params), { signal: current.signal });
    return [
      page.instances.length ? table(['Order', 'Phase', 'Finished', 'Version#', 'Updated'], page.instances.map((instance) => h('tr', {},
        h('td', {}, allowed('sagas.read') ? link(go('saga', instance.id), instance.id) : instance.id),
        h('td', {}, instance.phase),
        h('td', {}, instance.finished ? 'yes' : 'no'),
        h('td', { class: 'num' }, String(instance.version)),
        h('td', {}, time(instance.updated_at))))) : h('p', {}, 'No saga is in this phase.'),
      h('div', { class: 'actions' },
        after ? link(go('sagas', null, { phase }), 'First page') : null,
        page.next_after ? link(go('sagas', null, { phase, after: page.next_after }), 'Next page') : null),
    ];
  });
}

function sagaPage(main, orderId, _query, current) {
  main.append(h('h1', {}, 'Saga of order ', h('code', {}, orderId || '')));
  const body = h('div', { id: 'saga-body' }, h('p', { class: 'muted' }, 'Loading…'));
  main.append(body);
  fill(body, async () => {
    const instance = await api('/api/v1/sagas/fulfilment/' + encodeURIComponent(orderId), { signal: current.signal });
    const state = instance.state || {};
    return [
      facts([
        ['Phase', state.phase ? stateText(state.phase) : '—', 'saga-phase'],
        ['Finished', instance.finished ? 'yes' : 'no'],
        ['Stream', allowed('streams.read') ? link(go('stream', instance.stream), instance.stream) : instance.stream],
        ['Order stream', allowed('streams.read') ? link(go('stream', 'order-' + orderId), 'order-' + orderId) : 'order-' + orderId],
      ]),
      h('h2', {}, 'Timeline'),
      table(['Version#', 'Position#', 'Recorded', 'Input'], (instance.steps || []).map((step) => h('tr', {},
        h('td', { class: 'num' }, String(step.version)),
        h('td', { class: 'num' }, String(step.position)),
        h('td', {}, time(step.recorded_at)),
        h('td', {}, h('details', {}, h('summary', {}, step.event_type), json(step.input))))), { id: 'saga-steps' }),
      h('h2', {}, 'Pending commands'),
      (instance.pending_commands || []).length ? json(instance.pending_commands) : h('p', { class: 'muted' }, 'None.'),
      h('h2', {}, 'Pending deadlines'),
      (instance.pending_deadlines || []).length ? json(instance.pending_deadlines) : h('p', { class: 'muted' }, 'None.'),
      h('details', {}, h('summary', {}, 'State'), json(state)),
    ];
  });
}

// ---- relay and dependencies -------------------------------------------------------------

function relayPage(main, _argument, _query, current) {
  main.append(h('h1', {}, 'Relay and dependencies'));
  const outbox = h('div', { id: 'outbox' });
  const dependencies = h('div', { id: 'dependencies' });
  if (allowed('outbox.read')) main.append(h('h2', {}, 'Outbox relay'), outbox);
  if (allowed('operations.dependencies')) main.append(h('h2', {}, 'Dependencies'), dependencies);
  const load = () => {
    if (allowed('outbox.read')) refresh(outbox, () => api('/api/v1/outbox', { signal: current.signal }), relayFacts);
    if (allowed('operations.dependencies')) {
      refresh(dependencies, () => api('/api/v1/dependencies', { signal: current.signal }), (answer) => {
        if (!answer.dependencies.length) return h('p', { id: 'no-dependencies' }, 'This server calls no external dependency (no --psp-url).');
        return table(['Dependency', 'Kind', 'Breaker', 'Failures in a row#', 'Last error'], answer.dependencies.map((dependency) => h('tr', {},
          h('td', {}, dependency.name), h('td', {}, dependency.kind), h('td', {}, stateText(dependency.state)),
          h('td', { class: 'num' }, String(dependency.consecutive_failures)),
          h('td', {}, dependency.last_error ? [dependency.last_error, ' ', time(dependency.last_error_at)] : '—'))));
      });
    }
  };
  load();
  current.every(5000, load);
}

// ---- start ------------------------------------------------------------------------------

// A new page's heading (or the main part) takes the focus, so that a keyboard or screen
// reader user starts at its top, as after following a link to a new document.
function focusPage() {
  const main = document.getElementById('main');
  const heading = main.querySelector('h1');
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  } else {
    main.focus();
  }
}

window.addEventListener('hashchange', () => {
  route();
  focusPage();
});
// The skip link: past the header to the page, without touching the route in the URL.
document.getElementById('skip').addEventListener('click', (clicked) => {
  clicked.preventDefault();
  focusPage();
});
start();
