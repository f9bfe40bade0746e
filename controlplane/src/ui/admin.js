// The CodeB admin pages (controlplane/src/ui/mod.rs serves them). No
// framework and no build step: the DOM is built with createElement and
// text nodes only, so nothing the API returns is ever parsed as markup.
'use strict';

(() => {
  const CLIENT_ID = 'codeb-admin';
  const SESSION = 'codeb.admin.session';
  // A message for the sign-in form after a reload (signed out, session
  // ended).
  const FLASH = 'codeb.admin.flash';
  const API = '/api.ashx/v1';
  const REFRESH_MS = 3000;
  const $ = (id) => document.getElementById(id);

  // ---- DOM ----

  // h('td', {class: 'x', on: {click: f}}, 'text', node, [more]): an element
  // whose children are nodes or text (never HTML).
  function h(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'on') {
        for (const [name, f] of Object.entries(v)) e.addEventListener(name, f);
      } else if (k === 'class') {
        e.className = v;
      } else if (k === 'dataset') {
        Object.assign(e.dataset, v);
      } else if (v === true) {
        e.setAttribute(k, '');
      } else if (v !== false && v !== null && v !== undefined) {
        e.setAttribute(k, String(v));
      }
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid !== null && kid !== undefined && kid !== false) {
        e.append(kid instanceof Node ? kid : String(kid));
      }
    }
    return e;
  }

  // An ISO time as "2026-01-01 12:00:05Z" (UTC, as the API gives it).
  function when(iso) {
    if (!iso) return '—';
    return h('time', {datetime: iso, title: iso}, `${iso.slice(0, 10)} ${iso.slice(11, 19)}Z`);
  }

  // A button that acts on its second click within 4 s ("Revoke" →
  // "Confirm revoke"), so nothing is destroyed by one stray click and no
  // modal dialog is needed.
  function twoStep(label, confirmLabel, act) {
    let timer = null;
    const b = h('button', {type: 'button', class: 'danger'}, label);
    b.addEventListener('click', async () => {
      if (!b.dataset.armed) {
        b.dataset.armed = '1';
        b.textContent = confirmLabel;
        timer = setTimeout(() => {
          delete b.dataset.armed;
          b.textContent = label;
        }, 4000);
        return;
      }
      clearTimeout(timer);
      delete b.dataset.armed;
      b.textContent = label;
      await busy(b, act);
    });
    return b;
  }

  // Runs `act` with `button` disabled; its error is reported on the page.
  async function busy(button, act) {
    button.disabled = true;
    try {
      await act();
    } catch (err) {
      report(err);
    } finally {
      button.disabled = false;
    }
  }

  // A button that runs `act` once per click, disabled while it runs.
  function action(label, act, cls) {
    const b = h('button', {type: 'button', class: cls || null}, label);
    b.addEventListener('click', () => busy(b, act));
    return b;
  }

  function report(err) {
    if (err instanceof SignedOut) return;
    const box = $('error');
    if (box) box.textContent = err && err.message ? err.message : String(err);
  }

  function clearMessages() {
    for (const id of ['error', 'notice']) {
      const box = $(id);
      if (box) box.textContent = '';
    }
  }

  // The secret or key a create or rotate returned: shown here once, with
  // a copy button; nothing keeps it once the box is closed.
  function showSecret(title, value, note) {
    const box = $('secret');
    const code = h('code', {id: 'secret-value'}, value);
    const select = () => {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      copy.textContent = 'Selected: press Ctrl+C';
    };
    const copy = action('Copy', async () => {
      if (!navigator.clipboard || !window.isSecureContext) {
        select();
        return;
      }
      try {
        await navigator.clipboard.writeText(value);
        copy.textContent = 'Copied';
      } catch (_) {
        select(); // the browser refused the clipboard
      }
    });
    const done = h('button', {type: 'button', id: 'secret-done'}, 'Done');
    done.addEventListener('click', () => {
      box.hidden = true;
      box.replaceChildren();
    });
    box.replaceChildren(
      h('strong', null, title),
      h('p', null, 'Copy it now: it is not shown again.', note ? ` ${note}` : ''),
      h('div', {class: 'row'}, code, copy, done),
    );
    box.hidden = false;
  }

  // ---- session ----

  class SignedOut extends Error {}

  function session() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION));
    } catch (_) {
      return null;
    }
  }

  function keep(s) {
    if (s) sessionStorage.setItem(SESSION, JSON.stringify(s));
    else sessionStorage.removeItem(SESSION);
  }

  async function grant(params) {
    const r = await fetch('/oidc.ashx/token', {
      method: 'POST',
      headers: {'Content-Type': 'application/x-www-form-urlencoded'},
      body: new URLSearchParams({...params, client_id: CLIENT_ID}),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new Error(j.error_description || j.error || `HTTP ${r.status}`);
      err.code = j.error || '';
      throw err;
    }
    return {access: j.access_token, refresh: j.refresh_token || null};
  }

  // Refresh tokens rotate, and presenting a spent one revokes its whole
  // family. Requests of this tab that meet a 401 together wait on one
  // refresh; tabs that share a session (a duplicated tab copies its
  // sessionStorage) take turns under a Web Lock, and the one that rotates
  // tells the others the new tokens, so no tab presents a spent one.
  const channel = 'BroadcastChannel' in window ? new BroadcastChannel('codeb.admin') : null;
  if (channel) {
    channel.onmessage = (ev) => {
      const s = session();
      const d = ev.data || {};
      if (!s) return;
      if (d.was && s.refresh === d.was) keep({...s, access: d.access, refresh: d.refresh});
      // Signed out in a tab of the same session: this one goes too.
      if (d.signedOut && s.refresh === d.signedOut) {
        keep(null);
        sessionStorage.setItem(FLASH, 'Signed out (in another tab).');
        location.replace(location.pathname);
      }
    };
  }

  let refreshing = null;
  function refresh() {
    if (!refreshing) {
      const used = (session() || {}).refresh;
      const run = async () => {
        const s = session();
        if (!s || !s.refresh || !used) {
          const err = new Error('no session');
          err.code = 'invalid_grant';
          throw err;
        }
        if (s.refresh !== used) return; // another tab rotated it meanwhile
        const t = await grant({grant_type: 'refresh_token', refresh_token: used});
        const now = session();
        if (!now || now.refresh !== used) return; // signed out meanwhile
        keep({...now, ...t});
        if (channel) channel.postMessage({was: used, access: t.access, refresh: t.refresh});
      };
      const turn = navigator.locks ? navigator.locks.request('codeb.admin.refresh', run) : run();
      refreshing = turn.finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  // Ends the session on this tab: the page loads again, signed out (so
  // nothing the last user saw, such as a key shown once, stays in it).
  function endSession(message) {
    keep(null);
    sessionStorage.setItem(FLASH, message);
    location.replace(location.pathname);
    throw new SignedOut('signed out');
  }

  // One v1 API call: the parsed JSON, or an Error carrying the API's
  // error_description. A 401 refreshes the tokens once; a refresh the
  // issuer refuses ends the session (one that fails for another reason,
  // such as a restart, keeps it and shows the error).
  async function api(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const s = session();
      if (!s) endSession('Sign in to continue.');
      const init = {method, headers: {Authorization: `Bearer ${s.access}`}};
      if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const r = await fetch(API + path, init);
      if (r.status === 401) {
        if (attempt > 0) endSession('Your session has ended: sign in again.');
        try {
          await refresh();
        } catch (err) {
          if (err.code === 'invalid_grant') endSession('Your session has ended: sign in again.');
          throw new Error(`Could not renew the session: ${err.message}`);
        }
        continue;
      }
      const j = await r.json().catch(() => null);
      if (r.status === 403) {
        stopTimers();
        throw new Error(`This account may not use these pages: ${(j && j.error_description) || 'it needs role admin'}.`);
      }
      if (!r.ok) throw new Error((j && (j.error_description || j.error)) || `HTTP ${r.status}`);
      return j;
    }
  }

  // Every item of a list endpoint, following its `next` links.
  async function all(path) {
    const items = [];
    let next = `${path}${path.includes('?') ? '&' : '?'}limit=500`;
    for (let page = 0; next && page < 20; page++) {
      const j = await api('GET', next);
      items.push(...j.data);
      next = typeof j.next === 'string' && j.next.startsWith(API) ? j.next.slice(API.length) : null;
    }
    return items;
  }

  let timers = [];
  function every(ms, f) {
    timers.push(setInterval(f, ms));
  }

  function stopTimers() {
    for (const t of timers) clearInterval(t);
    timers = [];
  }

  function showSignIn(message) {
    stopTimers();
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('who').textContent = '';
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message || '';
    $('sign-in-form').username.focus();
  }

  function enter() {
    $('sign-in').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    $('who').textContent = session().user;
    PAGES[document.body.dataset.page]();
  }

  $('sign-in-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const button = f.querySelector('button');
    button.disabled = true;
    $('sign-in-error').textContent = '';
    try {
      const t = await grant({
        grant_type: 'password',
        username: f.username.value,
        password: f.password.value,
        scope: 'openid offline_access',
      });
      keep({...t, user: f.username.value});
      f.password.value = '';
      enter();
    } catch (err) {
      $('sign-in-error').textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });

  $('sign-out').addEventListener('click', () => {
    const s = session();
    if (s && s.refresh && channel) channel.postMessage({signedOut: s.refresh});
    if (s && s.refresh) {
      // keepalive: it still goes out as the page reloads.
      fetch('/oidc.ashx/revoke', {
        method: 'POST',
        keepalive: true,
        headers: {'Content-Type': 'application/x-www-form-urlencoded'},
        body: new URLSearchParams({token: s.refresh, client_id: CLIENT_ID}),
      }).catch(() => {});
    }
    try {
      endSession('Signed out.');
    } catch (_) {
      // SignedOut: the page is reloading.
    }
  });

  // Runs a form's submit handler with its submit button disabled, so a
  // double click creates one thing, not two.
  function submitting(form, act) {
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const button = form.querySelector('button[type=submit]');
      if (button.disabled) return;
      clearMessages();
      await busy(button, act);
    });
  }

  // A "+ New" button that opens its form, and the form's Cancel.
  function opener(buttonId, form) {
    $(buttonId).addEventListener('click', () => {
      clearMessages();
      form.hidden = false;
      form.querySelector('input').focus();
    });
    form.querySelector('.cancel').addEventListener('click', () => {
      form.reset();
      form.hidden = true;
    });
  }

  // ---- /api-keys-admin.html ----

  function apiKeysPage() {
    const form = $('key-form');
    opener('new-key', form);
    submitting(form, async () => {
      const k = await api('POST', '/api-keys', {name: form.name.value});
      form.reset();
      form.hidden = true;
      showSecret(`API key "${k.name}"`, k.key);
      await loadKeys();
    });
    loadKeys().catch(report);
  }

  async function loadKeys() {
    const keys = await all('/api-keys');
    $('keys-body').replaceChildren(...keys.map((k) => h('tr', {dataset: {id: k.id}},
      h('td', {class: 'name'}, k.name),
      h('td', null, h('code', null, k.id)),
      h('td', null, when(k.createdAtUtc)),
      h('td', null, k.createdBy),
      h('td', null, k.lastUsedUtc ? when(k.lastUsedUtc) : 'never'),
      h('td', {class: 'actions'}, twoStep('Revoke', 'Confirm revoke', async () => {
        await api('DELETE', `/api-keys/${encodeURIComponent(k.id)}`);
        await loadKeys();
      })),
    )));
    $('keys-empty').hidden = keys.length > 0;
  }

  // ---- /webhooks-admin.html ----

  let openDeliveries = null;

  function webhooksPage() {
    const form = $('webhook-form');
    opener('new-webhook', form);
    const boxes = [...form.querySelectorAll('input[name=events]')];
    const star = boxes.find((b) => b.value === '*');
    const sync = () => {
      for (const b of boxes) if (b !== star) b.disabled = star.checked;
    };
    star.addEventListener('change', sync);
    form.addEventListener('reset', () => setTimeout(sync));
    submitting(form, async () => {
      const events = star.checked ? ['*'] : boxes.filter((b) => b.checked).map((b) => b.value);
      if (events.length === 0) throw new Error('Choose the events to send: * for every event, or some by name.');
      const w = await api('POST', '/webhooks', {url: form.url.value, events});
      form.reset();
      form.hidden = true;
      showSecret(`Signing secret of ${w.url}`, w.secret);
      await loadWebhooks();
    });
    loadWebhooks().catch(report);
  }

  async function loadWebhooks() {
    const hooks = await all('/webhooks');
    $('webhooks-body').replaceChildren(...hooks.map((w) => {
      const id = encodeURIComponent(w.id);
      const state = w.active
        ? h('span', {class: 'ok'}, 'active')
        : h('span', {class: 'bad', title: w.pausedReason || ''}, 'paused',
          w.pausedAtUtc ? [' since ', when(w.pausedAtUtc)] : null);
      return h('tr', {dataset: {id: w.id}},
        h('td', {class: 'url'}, w.url),
        h('td', null, w.events.join(', ')),
        h('td', {class: 'state'}, state),
        h('td', null, when(w.lastFiredUtc)),
        h('td', null, String(w.failures)),
        h('td', {class: 'actions'},
          action('Test fire', async () => {
            clearMessages();
            const t = await api('POST', `/webhooks/${id}/test`);
            $('notice').textContent = w.active
              ? `Sent ${t.event} to ${w.url} (delivery ${t.deliveryId}).`
              : `Queued ${t.event} (delivery ${t.deliveryId}): held while the subscription is paused; Resume sends it.`;
            await showDeliveries(w);
          }),
          w.active ? null : action('Resume', async () => {
            await api('POST', `/webhooks/${id}/resume`);
            await loadWebhooks();
          }),
          action('Deliveries', () => showDeliveries(w)),
          // A secret is rotated here because it was lost or leaked: the
          // new one signs at once and the old one stops (the API's
          // graceHours gives an overlap to those who want one).
          twoStep('Rotate secret', 'Confirm rotate', async () => {
            clearMessages();
            const r = await api('POST', `/webhooks/${id}/rotate-secret`, {graceHours: 0});
            showSecret(`New signing secret of ${w.url}`, r.secret,
              'It signs every delivery from now on; the old secret no longer does.');
          }),
          twoStep('Delete', 'Confirm delete', async () => {
            await api('DELETE', `/webhooks/${id}`);
            if (openDeliveries === w.id) {
              openDeliveries = null;
              $('deliveries').hidden = true;
            }
            await loadWebhooks();
          }),
        ),
      );
    }));
    $('webhooks-empty').hidden = hooks.length > 0;
  }

  let deliveriesSeq = 0;
  async function showDeliveries(w) {
    const mine = ++deliveriesSeq;
    const j = await api('GET', `/webhooks/${encodeURIComponent(w.id)}/deliveries?limit=50`);
    if (mine !== deliveriesSeq) return; // a later request draws the log
    openDeliveries = w.id;
    const rows = j.data.map((d) => h('tr', {dataset: {id: d.id}},
      h('td', null, when(d.createdAtUtc)),
      h('td', null, d.event),
      h('td', {class: `delivery-state ${d.state}`}, d.state),
      h('td', null, String(d.attempts)),
      h('td', null, d.lastStatusCode === null ? '—' : String(d.lastStatusCode)),
      h('td', {class: 'error-text'}, d.lastError),
      h('td', null, h('code', null, d.id)),
      h('td', {class: 'actions'}, d.state === 'succeeded' || d.state === 'failed'
        ? action('Replay', async () => {
          const r = await api('POST', `/webhooks/deliveries/${encodeURIComponent(d.id)}/replay`);
          $('notice').textContent = w.active
            ? `Replayed as delivery ${r.deliveryId}.`
            : `Queued as delivery ${r.deliveryId}: held while the subscription is paused.`;
          await showDeliveries(w);
        })
        : null),
    ));
    const section = $('deliveries');
    section.replaceChildren(
      h('h2', null, 'Deliveries to ', w.url),
      h('div', {class: 'bar'},
        action('Refresh', () => showDeliveries(w)),
        h('span', {class: 'muted'}, j.total > j.data.length
          ? `${j.total} in all; the latest ${j.data.length} shown.` : `${j.total} in all.`)),
      h('table', null,
        h('thead', null, h('tr', null, ...['Created', 'Event', 'State', 'Attempts', 'Last status',
          'Last error', 'Delivery id', ''].map((t) => h('th', null, t)))),
        h('tbody', {id: 'deliveries-body'}, rows)),
    );
    section.hidden = false;
  }

  // ---- /outbound-ai-monitor.html ----

  const PAGE_SIZE = 25;
  const TERMINAL = new Set(['ended-success', 'ended-failed-final', 'cancelled']);
  let offset = 0;
  let callsSeq = 0;

  function monitorPage() {
    $('status-filter').addEventListener('change', () => {
      offset = 0;
      loadCalls().catch(report);
    });
    $('prev').addEventListener('click', () => {
      offset = Math.max(0, offset - PAGE_SIZE);
      loadCalls().catch(report);
    });
    $('next').addEventListener('click', () => {
      offset += PAGE_SIZE;
      loadCalls().catch(report);
    });
    loadCalls().catch(report);
    every(REFRESH_MS, () => {
      if (!document.hidden) loadCalls(true).catch(report);
    });
  }

  // A half-confirmed hang-up: the list is not redrawn under it.
  const armed = () => document.querySelector('#calls [data-armed]') !== null;

  // Draws the page of calls; only the latest request draws (a slow one
  // never overwrites a newer filter or page), and the periodic refresh
  // (`auto`) leaves a half-confirmed hang-up alone.
  async function loadCalls(auto) {
    if (auto && armed()) return;
    const mine = ++callsSeq;
    const status = $('status-filter').value;
    const filter = status ? `&status=${encodeURIComponent(status)}` : '';
    const at = offset;
    const j = await api('GET', `/calls?limit=${PAGE_SIZE}&offset=${at}${filter}`);
    if (mine !== callsSeq || (auto && armed())) return;
    const focused = focusInCalls();
    $('calls-body').replaceChildren(...j.data.map(callRow));
    refocus(focused);
    $('calls-empty').textContent = at > 0 || status ? 'No calls here.' : 'No calls yet.';
    $('calls-empty').hidden = j.data.length > 0;
    $('prev').disabled = at === 0;
    $('next').disabled = !j.next;
    $('range').textContent = j.data.length
      ? `${at + 1}–${at + j.data.length} of ${j.total}` : '';
    $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    $('error').textContent = '';
  }

  // The button focused in the list (keyboard users tab through it), by
  // its row and label, so a redraw puts the focus back where it was.
  function focusInCalls() {
    const el = document.activeElement;
    const row = el && el.closest ? el.closest('#calls-body tr') : null;
    return row ? {id: row.dataset.id, label: el.textContent} : null;
  }

  // Focuses the same button in the redrawn row: the first one if its own
  // is gone (a hang-up button once the call ended), nothing if the row is.
  function refocus(f) {
    if (!f) return;
    const row = [...$('calls-body').rows].find((r) => r.dataset.id === f.id);
    if (!row) return;
    const buttons = [...row.querySelectorAll('button')];
    const el = buttons.find((b) => b.textContent === f.label) || buttons[0];
    if (el) el.focus({preventScroll: true});
  }

  function callRow(c) {
    const id = encodeURIComponent(c.callId);
    const outcome = [c.endedReason, c.errorDetail].filter(Boolean).join(': ');
    return h('tr', {dataset: {id: c.callId, status: c.status}},
      h('td', null, h('code', null, c.callId)),
      h('td', null, c.phone),
      h('td', null, c.displayName),
      h('td', {class: `status ${c.status}`}, c.status),
      h('td', null, String(c.attempt)),
      h('td', {class: 'outcome'}, outcome || '—'),
      h('td', null, when(c.dispatchedAtUtc)),
      h('td', null, when(c.answeredAtUtc)),
      h('td', null, when(c.endedAtUtc)),
      h('td', null, c.endedAtUtc ? `${c.durationSec} s` : '—'),
      h('td', {class: 'actions'},
        TERMINAL.has(c.status) ? null : twoStep('Hang up', 'Confirm hang-up', async () => {
          await api('POST', `/calls/${id}/hangup`);
          await loadCalls();
        }),
        c.transcriptPath ? action('Transcript', () => showTranscript(c.callId)) : null),
    );
  }

  async function showTranscript(callId) {
    const t = await api('GET', `/transcripts/${encodeURIComponent(callId)}`);
    const facts = [
      ['Phone', t.phone], ['Name', t.displayName], ['Outcome', t.outcome],
      ['Started', t.startedUtc], ['Answered', t.answeredUtc], ['Ended', t.endedUtc],
      ['Duration', `${t.durationSec} s`], ['Turns', `${t.inputTurns} caller, ${t.outputTurns} AI`],
    ].filter(([, v]) => v !== null && v !== undefined && v !== '');
    const section = $('transcript');
    section.replaceChildren(
      h('h2', null, 'Transcript ', h('code', null, t.callId)),
      h('dl', null, facts.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
      h('ol', {class: 'turns', id: 'turns'}, t.turns.map((turn) => h('li', {class: `turn ${turn.speaker}`},
        h('span', {class: 'who'}, turn.speaker),
        h('span', {class: 'muted'}, ' ', when(turn.ts)),
        h('div', {class: 'text'}, turn.text)))),
    );
    section.hidden = false;
    section.scrollIntoView();
  }

  const PAGES = {
    'api-keys': apiKeysPage,
    webhooks: webhooksPage,
    monitor: monitorPage,
  };

  if (session()) {
    enter();
  } else {
    const flash = sessionStorage.getItem(FLASH) || '';
    sessionStorage.removeItem(FLASH);
    showSignIn(flash);
  }
})();
