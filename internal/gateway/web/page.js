// The berth session page: connects noVNC to the gateway's WebSocket and
// gives it a toolbar (full screen, view mode, clipboard, special keys,
// files, disconnect), shows who else is connected, and reconnects after a
// dropped connection while the link is valid.
//
// The token is the query's authToken and the session ID the fragment, as in
// a DCV web URL. body[data-state] is the connection state (connecting,
// connected, reconnecting, disconnected, ended, expired, refused), #status
// the message shown while not connected: tests read both.
//
// The broker's notices (from "notice-wait", a long poll kept open while
// connected, and session-info's "notice") show in #notice with the time left counting down in #notice-left and, when
// the session's lifetime can be extended, #notice-extend, which posts to
// "extend". A connection the broker closed by policy (session-info's
// "disconnected") is not reconnected by itself: #status says why.
import RFB from './novnc/core/rfb.js';
import KeyTable from './novnc/core/input/keysym.js';
import keysyms from './novnc/core/input/keysymdef.js';

// Encoding settings sent to the VNC server (noVNC's 0-9 scales): JPEG
// quality of Tight updates and zlib effort. noVNC's defaults, which the
// speed benchmarks chose (docs/performance.md, "The choice").
const QUALITY_LEVEL = 6;
const COMPRESSION_LEVEL = 2;

// Reconnecting: the first retry after RETRY_FIRST_MS, doubling up to
// RETRY_MAX_MS, each delay jittered by ±RETRY_JITTER.
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
const RETRY_JITTER = 0.2;
// A session-info answer of "ended" right after a drop may come from an agent
// that restarted and has not yet taken its sessions back: it is believed
// after this many answers in a row.
const ENDED_CONFIRMATIONS = 3;

// INFO_POLL_MS is how often session-info is asked while connected (who else
// is connected, changed permissions).
const INFO_POLL_MS = 10000;
// TOOLBAR_HIDE_MS is how long the toolbar stays after the pointer or focus
// leaves it.
const TOOLBAR_HIDE_MS = 2500;
// VIEW_KEY is the localStorage key of the view mode.
const VIEW_KEY = 'berth.view';
const VIEW_MODES = ['fit', 'scale', 'native'];
const VIEW_LABELS = {fit: 'View: Fit', scale: 'View: Scale', native: 'View: 1:1'};
const VIEW_TITLES = {
  fit: 'Fit: the desktop is resized to this window (scaled where the session cannot resize). Choose to switch to Scale.',
  scale: 'Scale: the desktop keeps its size and is shrunk to fit this window. Choose to switch to 1:1.',
  native: '1:1: the desktop is shown unscaled, with scroll bars. Choose to switch to Fit.',
};

const $ = (id) => document.getElementById(id);
const el = {
  screen: $('screen'), status: $('status'), overlay: $('overlay'), statusActions: $('status-actions'),
  reconnect: $('reconnect'), live: $('live'), handle: $('handle'), bar: $('bar'), toolbar: $('toolbar'),
  fullscreen: $('fullscreen'), view: $('view'), disconnect: $('disconnect'), viewonly: $('viewonly'),
  keyboard: $('keyboard'), touchInput: $('touch-input'),
  peers: $('peers'),
  clipToggle: $('clip-toggle'), clipPanel: $('clip-panel'), clipNote: $('clip-note'), clipText: $('clip-text'),
  clipSend: $('clip-send'), clipLocal: $('clip-local'), clipClear: $('clip-clear'),
  keysToggle: $('keys-toggle'), keysPanel: $('keys-panel'), keysNote: $('keys-note'), fkeys: $('keys-fkeys'),
  filesToggle: $('files-toggle'), filesPanel: $('files-panel'), filesNote: $('files-note'),
  filesUp: $('files-up'), filesPath: $('files-path'), filesRefresh: $('files-refresh'),
  filesList: $('files-list'), filesInput: $('files-input'), filesOverwrite: $('files-overwrite'),
  filesProgressRow: $('files-progress-row'), filesProgress: $('files-progress'), filesProgressText: $('files-progress-text'),
  notice: $('notice'), noticeText: $('notice-text'), noticeTime: $('notice-time'), noticeLeft: $('notice-left'),
  noticeError: $('notice-error'), noticeExtend: $('notice-extend'), noticeDismiss: $('notice-dismiss'),
};

const token = new URLSearchParams(location.search).get('authToken') || '';
let sid = location.hash.slice(1);
try { sid = decodeURIComponent(sid); } catch (e) { /* keep it as it is */ }
// clientId names this page to the gateway, which leaves its connection out
// of the peers it lists.
const clientId = (crypto.randomUUID ? crypto.randomUUID() : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join(''));
const qs = 'authToken=' + encodeURIComponent(token) + '&sessionId=' + encodeURIComponent(sid);

// page is the page's state; window.berthPage exposes it to tests.
const page = {
  rfb: null,
  info: null,          // the last session-info answer
  state: '',
  userDisconnect: false,
  retries: 0,          // failed tries since the last connection
  ended: 0,            // "ended" answers in a row
  retryTimer: 0,
  countdownTimer: 0,
  pollTimer: 0,
  clipboardReceived: 0, // clipboard texts received from the session
  upload: null,         // the last upload progress: {name, loaded, total}
  view: readView(),
  notice: null,         // the notice shown: {message, policy, due (ms, local clock), extendable}, or null
  noticeTimer: 0,
  dismissed: '',        // the key of the notice the user dismissed
  extended: null,       // the last extension: {deadline, secondsLeft}
};
window.berthPage = page;

// ---- Connection state and messages ----

function setState(state, message, canRetry) {
  page.state = state;
  document.body.dataset.state = state;
  el.status.textContent = message || '';
  el.status.hidden = !message;
  el.overlay.hidden = !message;
  el.statusActions.hidden = !canRetry;
  el.reconnect.textContent = state === 'disconnected' ? 'Connect again' : 'Reconnect now';
  el.disconnect.textContent = live(state) ? 'Disconnect' : 'Connect';
  el.disconnect.disabled = state === 'ended' || state === 'expired';
  if (state !== 'connected') {
    el.peers.textContent = '';
  }
}

// live says whether the page is connected or trying to be.
function live(state) { return state === 'connected' || state === 'connecting' || state === 'reconnecting'; }

function announce(text) {
  el.live.textContent = '';
  requestAnimationFrame(() => { el.live.textContent = text; });
}

// ---- session-info ----

// askInfo asks session-info and returns {ok, info} or {ok: false, kind,
// reason}: kind is "expired", "invalid", "refused", "ended" or "network".
async function askInfo() {
  let r;
  try {
    r = await fetch('session-info?' + qs + '&clientId=' + encodeURIComponent(clientId), {cache: 'no-store', credentials: 'omit'});
  } catch (e) {
    return {ok: false, kind: 'network', reason: 'The gateway cannot be reached.'};
  }
  if (r.ok) {
    return {ok: true, info: await r.json()};
  }
  const reason = (await r.text().catch(() => '')).trim();
  switch (r.status) {
  case 401:
    return {ok: false, kind: /expired/i.test(reason) ? 'expired' : 'invalid', reason};
  case 403:
    return {ok: false, kind: 'refused', reason};
  case 404:
  case 410:
    return {ok: false, kind: 'ended', reason};
  case 400:
    return {ok: false, kind: 'invalid', reason};
  }
  return {ok: false, kind: 'network', reason: reason || ('the gateway answered ' + r.status)};
}

const EXPIRED_MESSAGE = 'This link has expired.\nOpen the session again from your portal, or ask your administrator for a new link ' +
  '(GetSessionConnectionData, or: berth get-session-connection-data --url).';
const ENDED_MESSAGE = 'This session has ended.\nIt was deleted or stopped. Start a new session from your portal, or ask your administrator.';

// failInfo shows why session-info refused, and says whether to retry.
function failInfo(res) {
  switch (res.kind) {
  case 'expired':
    setState('expired', EXPIRED_MESSAGE, false);
    return false;
  case 'invalid':
    setState('refused', 'This link is not valid: ' + res.reason + '\nAsk your portal or administrator for a new link.', false);
    return false;
  case 'refused':
    setState('refused', 'You cannot connect to this session: ' + res.reason, true);
    return false;
  case 'ended':
    page.ended++;
    if (page.state !== 'reconnecting' || page.ended >= ENDED_CONFIRMATIONS) {
      setState('ended', ENDED_MESSAGE, false);
      return false;
    }
    return true;
  }
  return true;
}

// applyInfo shows what session-info says: view-only, peers, permissions.
function applyInfo(info) {
  page.info = info;
  const p = info.permissions || {};
  el.viewonly.hidden = !info.viewOnly;
  const peers = info.peers || [];
  if (page.state === 'connected') {
    el.peers.textContent = peers.length ? 'Also connected: ' + peers.join(', ') : 'Only you are connected';
  }
  if (page.rfb) {
    page.rfb.viewOnly = !!info.viewOnly;
  }
  // Clipboard.
  const notes = [];
  if (!p.clipboardCopy) {
    notes.push('You may not copy from this session (no clipboard-copy permission): its clipboard does not reach this page.');
  }
  if (!p.clipboardPaste) {
    notes.push('You may not paste into this session (no clipboard-paste permission).');
  }
  el.clipNote.textContent = notes.length ? notes.join(' ')
    : 'Text copied in the session appears here. To paste into the session, put text here and choose Send to session.';
  el.clipNote.classList.toggle('warn', notes.length > 0);
  el.clipSend.disabled = !p.clipboardPaste;
  el.clipText.readOnly = !p.clipboardPaste;
  el.clipText.disabled = !p.clipboardPaste && !p.clipboardCopy;
  // Keys.
  const noKeys = info.viewOnly || !p.keyboard;
  for (const b of el.keysPanel.querySelectorAll('button')) {
    b.disabled = noKeys;
  }
  el.keysNote.textContent = noKeys ? 'You may not use the keyboard in this session (no keyboard permission).'
    : 'Sends keys your browser or system would keep for itself.';
  el.keysNote.classList.toggle('warn', noKeys);
  el.keyboard.disabled = noKeys;
  // Files.
  filesPermissions(info);
  showNotice(info.notice || null);
}

// ---- The broker's notices and Extend ----

function noticeKey(n) { return n.message + '\n' + (n.deadline || ''); }

// formatLeft writes a number of seconds as h:mm:ss or m:ss.
function formatLeft(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? h + ':' + String(m).padStart(2, '0') + ':' + sec : m + ':' + sec;
}

function tickNotice() {
  const n = page.notice;
  if (!n || n.due === null) {
    return;
  }
  const left = Math.max(0, Math.ceil((n.due - Date.now()) / 1000));
  el.noticeLeft.textContent = formatLeft(left);
  el.noticeLeft.dataset.seconds = String(left);
}

// showNotice shows session-info's notice n (null hides the banner). A
// notice the user dismissed stays hidden until another one comes.
function showNotice(n) {
  if (!n || noticeKey(n) === page.dismissed) {
    hideNotice();
    return;
  }
  const fresh = !page.notice || page.notice.key !== noticeKey(n);
  const hasLeft = typeof n.secondsLeft === 'number';
  page.notice = {
    key: noticeKey(n), message: n.message, policy: n.policy || '', extendable: !!n.extendable,
    due: hasLeft ? Date.now() + n.secondsLeft * 1000 : null,
  };
  el.noticeText.textContent = n.message;
  el.noticeTime.hidden = !hasLeft;
  el.noticeExtend.hidden = !n.extendable;
  el.noticeExtend.disabled = false;
  if (fresh) {
    el.noticeError.hidden = true;
  }
  el.notice.hidden = false;
  document.body.dataset.notice = 'shown';
  tickNotice();
  clearInterval(page.noticeTimer);
  if (hasLeft) {
    page.noticeTimer = setInterval(tickNotice, 1000);
  }
}

function hideNotice() {
  clearInterval(page.noticeTimer);
  page.notice = null;
  el.notice.hidden = true;
  document.body.dataset.notice = '';
}

el.noticeDismiss.addEventListener('click', () => {
  if (page.notice) {
    page.dismissed = page.notice.key;
  }
  hideNotice();
  if (page.rfb) {
    page.rfb.focus();
  }
});

el.noticeExtend.addEventListener('click', async () => {
  el.noticeExtend.disabled = true;
  el.noticeError.hidden = true;
  let r;
  try {
    r = await fetch('extend?' + qs, {
      method: 'POST', cache: 'no-store', credentials: 'omit',
      headers: {'Content-Type': 'application/json'}, body: '{}',
    });
  } catch (e) {
    r = null;
  }
  if (r && r.ok) {
    const d = await r.json();
    page.extended = d;
    const until = new Date(Date.now() + d.secondsLeft * 1000);
    hideNotice();
    announce('Extended: the session now ends at ' + until.toLocaleTimeString() + '.');
    if (page.rfb) {
      page.rfb.focus();
    }
    return;
  }
  const why = r ? (await r.text().catch(() => '')).trim() || ('the gateway answered ' + r.status) : 'the gateway cannot be reached';
  el.noticeError.textContent = 'Cannot extend: ' + why;
  el.noticeError.hidden = false;
  el.noticeExtend.disabled = false;
  announce('Cannot extend: ' + why);
});

// waitNotices long-polls notice-wait while connected, so that a notice
// shows within a moment of the broker's warning.
async function waitNotices(rfb) {
  let after = '';
  while (page.rfb === rfb && page.state === 'connected') {
    let r;
    try {
      r = await fetch('notice-wait?' + qs + '&after=' + after, {cache: 'no-store', credentials: 'omit'});
    } catch (e) {
      r = null;
    }
    if (page.rfb !== rfb) {
      return;
    }
    if (!r || !r.ok) {
      await new Promise((done) => setTimeout(done, 5000));
      continue;
    }
    const d = await r.json();
    after = String(d.seq);
    showNotice(d.notice || null);
  }
}

function pollInfo() {
  clearTimeout(page.pollTimer);
  page.pollTimer = setTimeout(async () => {
    if (page.state !== 'connected') {
      return;
    }
    const res = await askInfo();
    if (res.ok) {
      applyInfo(res.info);
    }
    pollInfo();
  }, INFO_POLL_MS);
}

// ---- Connecting and reconnecting ----

async function connect() {
  clearTimeout(page.retryTimer);
  clearInterval(page.countdownTimer);
  page.userDisconnect = false;
  if (!token || !sid) {
    setState('refused', 'This link is incomplete: it needs an authToken and a session ID.', false);
    return;
  }
  if (page.state !== 'reconnecting') {
    setState('connecting', 'Connecting…', false);
  }
  const res = await askInfo();
  if (page.userDisconnect) {
    return; // Disconnect was chosen while asking
  }
  if (!res.ok) {
    if (failInfo(res)) {
      scheduleRetry(res.kind === 'ended' ? 'The session is not available.' : res.reason);
    }
    return;
  }
  page.ended = 0;
  applyInfo(res.info);
  const url = new URL('websockify?' + qs + '&clientId=' + encodeURIComponent(clientId), location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const rfb = new RFB(el.screen, url.href);
  page.rfb = rfb;
  window.rfb = rfb;
  rfb.viewOnly = !!res.info.viewOnly;
  rfb.focusOnClick = true;
  rfb.qualityLevel = QUALITY_LEVEL;
  rfb.compressionLevel = COMPRESSION_LEVEL;
  applyView();
  rfb.addEventListener('connect', () => {
    page.retries = 0;
    setState('connected', '', false);
    applyInfo(page.info);
    announce('Connected to the session.');
    rfb.focus();
    pollInfo();
    waitNotices(rfb);
    peekToolbar();
  });
  rfb.addEventListener('disconnect', () => {
    if (page.rfb !== rfb) {
      return;
    }
    page.rfb = null;
    clearTimeout(page.pollTimer);
    if (page.userDisconnect) {
      setState('disconnected', 'Disconnected.', true);
      return;
    }
    afterDrop();
  });
  rfb.addEventListener('clipboard', (e) => {
    page.clipboardReceived++;
    el.clipText.value = e.detail.text;
    announce('Clipboard text received from the session.');
  });
  rfb.addEventListener('desktopname', (e) => { document.title = e.detail.name + ' – berth'; });
}

// afterDrop asks session-info why the connection ended: a disconnection by
// the broker's policy is shown and not retried; anything else is.
async function afterDrop() {
  const res = await askInfo();
  if (page.rfb || page.userDisconnect) {
    return; // connected again, or the user chose, meanwhile
  }
  if (res.ok && res.info.disconnected) {
    hideNotice();
    page.userDisconnect = true;
    setState('disconnected', res.info.disconnected + '\nChoose Connect again to continue.', true);
    announce(res.info.disconnected);
    return;
  }
  scheduleRetry('The connection to the session was lost.');
}

function scheduleRetry(why) {
  const expires = page.info && page.info.expiresAt ? Date.parse(page.info.expiresAt) : NaN;
  if (!isNaN(expires) && Date.now() >= expires) {
    setState('expired', EXPIRED_MESSAGE, false);
    return;
  }
  const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** page.retries);
  const delay = Math.round(base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * Math.random()));
  page.retries++;
  const due = Date.now() + delay;
  const show = () => {
    const s = Math.max(0, Math.ceil((due - Date.now()) / 1000));
    setState('reconnecting', why + '\nReconnecting in ' + s + ' s (try ' + page.retries + ')…', true);
  };
  page.state = 'reconnecting';
  show();
  clearInterval(page.countdownTimer);
  page.countdownTimer = setInterval(show, 1000);
  clearTimeout(page.retryTimer);
  page.retryTimer = setTimeout(() => {
    clearInterval(page.countdownTimer);
    connect();
  }, delay);
}

function userDisconnect() {
  clearTimeout(page.retryTimer);
  clearInterval(page.countdownTimer);
  page.userDisconnect = true;
  if (page.rfb) {
    page.rfb.disconnect();
  } else {
    setState('disconnected', 'Disconnected.', true);
  }
}

el.reconnect.addEventListener('click', () => {
  page.retries = 0;
  if (page.state !== 'reconnecting') {
    page.state = '';
  }
  connect();
});
el.disconnect.addEventListener('click', () => {
  if (live(page.state)) {
    userDisconnect();
  } else {
    page.retries = 0;
    page.state = '';
    connect();
  }
});
addEventListener('pagehide', () => {
  page.userDisconnect = true;
  if (page.rfb) {
    page.rfb.disconnect();
  }
});

// ---- View mode: fit (resize the session), scale, 1:1 ----

function readView() {
  try {
    const v = localStorage.getItem(VIEW_KEY);
    if (VIEW_MODES.includes(v)) {
      return v;
    }
  } catch (e) { /* storage may be off */ }
  return 'scale';
}

function applyView() {
  el.view.textContent = VIEW_LABELS[page.view];
  el.view.title = VIEW_TITLES[page.view];
  el.view.setAttribute('aria-label', VIEW_LABELS[page.view] + '. ' + VIEW_TITLES[page.view]);
  const rfb = page.rfb;
  if (!rfb) {
    return;
  }
  rfb.clipViewport = false;
  rfb.scaleViewport = page.view !== 'native';
  rfb.resizeSession = page.view === 'fit';
}

el.view.addEventListener('click', () => {
  page.view = VIEW_MODES[(VIEW_MODES.indexOf(page.view) + 1) % VIEW_MODES.length];
  try { localStorage.setItem(VIEW_KEY, page.view); } catch (e) { /* storage may be off */ }
  applyView();
  announce(VIEW_LABELS[page.view]);
});

// ---- Full screen ----

if (!document.fullscreenEnabled) {
  el.fullscreen.hidden = true;
}
el.fullscreen.addEventListener('click', async () => {
  try {
    if (document.fullscreenElement) {
      await document.exitFullscreen();
    } else {
      await document.documentElement.requestFullscreen();
    }
  } catch (e) {
    announce('Full screen is not available: ' + e.message);
  }
});
document.addEventListener('fullscreenchange', () => {
  const on = !!document.fullscreenElement;
  el.fullscreen.setAttribute('aria-pressed', String(on));
  el.fullscreen.textContent = on ? 'Exit full screen' : 'Full screen';
});

// ---- Toolbar: auto-hiding, F8, handle ----

let hideTimer = 0;
let pointerInBar = false;

function barOpen() { return document.body.dataset.bar === 'open'; }
function anyPanelOpen() { return !el.clipPanel.hidden || !el.keysPanel.hidden || !el.filesPanel.hidden; }

function showBar() {
  clearTimeout(hideTimer);
  document.body.dataset.bar = 'open';
  el.bar.dataset.open = 'true';
  el.handle.setAttribute('aria-expanded', 'true');
}

function hideBar() {
  clearTimeout(hideTimer);
  document.body.dataset.bar = '';
  el.bar.dataset.open = 'false';
  el.handle.setAttribute('aria-expanded', 'false');
}

// hideSoon hides the toolbar after a while, unless the pointer is over it,
// it has the focus, or a panel is open.
function hideSoon() {
  clearTimeout(hideTimer);
  hideTimer = setTimeout(() => {
    if (pointerInBar || el.bar.contains(document.activeElement) || anyPanelOpen()) {
      return;
    }
    hideBar();
  }, TOOLBAR_HIDE_MS);
}

// peekToolbar shows the toolbar for a moment, so that people see it is
// there.
function peekToolbar() {
  showBar();
  hideSoon();
}

function focusScreen() {
  if (page.rfb) {
    page.rfb.focus();
  }
}

// openedAt is when the handle opened the toolbar: a touch screen may send
// the tap's click again to the button that has taken the handle's place
// (a "ghost click"), which the toolbar ignores for GHOST_CLICK_MS.
let openedAt = -Infinity;
let handleTouched = false;
const GHOST_CLICK_MS = 400;
el.handle.addEventListener('pointerdown', (e) => { handleTouched = e.pointerType === 'touch'; });
el.handle.addEventListener('click', () => {
  openedAt = handleTouched ? performance.now() : -Infinity;
  handleTouched = false;
  showBar();
  el.toolbar.querySelector('button:not([hidden]):not(:disabled)').focus();
});
el.bar.addEventListener('click', (e) => {
  if (e.isTrusted && performance.now() - openedAt < GHOST_CLICK_MS) {
    openedAt = -Infinity; // one ghost per tap
    e.preventDefault();
    e.stopPropagation();
  }
}, {capture: true});
el.bar.addEventListener('pointerenter', () => { pointerInBar = true; showBar(); });
el.bar.addEventListener('pointerleave', () => { pointerInBar = false; hideSoon(); });
el.bar.addEventListener('focusin', showBar);
el.bar.addEventListener('focusout', () => hideSoon());
addEventListener('mousemove', (e) => {
  if (e.clientY <= 6 && !barOpen()) {
    peekToolbar();
  }
}, {capture: true, passive: true});

// F8 (as in TigerVNC's viewer) opens the toolbar and focuses it, or gives
// the focus back to the desktop; Escape closes the open panel, then the
// toolbar. Both are taken before noVNC sees them (capture on window).
addEventListener('keydown', (e) => {
  if (e.key === 'F8' && !e.ctrlKey && !e.altKey && !e.metaKey) {
    e.preventDefault();
    e.stopPropagation();
    if (barOpen() && el.bar.contains(document.activeElement)) {
      closePanels();
      hideBar();
      focusScreen();
    } else {
      showBar();
      el.toolbar.querySelector('button:not([hidden]):not(:disabled)').focus();
    }
    return;
  }
  if (e.key === 'Escape' && el.bar.contains(document.activeElement)) {
    e.preventDefault();
    e.stopPropagation();
    if (anyPanelOpen()) {
      const open = [el.clipPanel, el.keysPanel, el.filesPanel].find((p) => !p.hidden);
      closePanels();
      toggleFor(open).focus();
    } else {
      hideBar();
      focusScreen();
    }
  }
}, {capture: true});

// Arrow keys move between the toolbar's buttons (a toolbar's usual keys).
el.toolbar.addEventListener('keydown', (e) => {
  if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') {
    return;
  }
  const buttons = [...el.toolbar.querySelectorAll('button:not([hidden])')];
  const i = buttons.indexOf(document.activeElement);
  if (i < 0) {
    return;
  }
  e.preventDefault();
  buttons[(i + (e.key === 'ArrowRight' ? 1 : buttons.length - 1)) % buttons.length].focus();
});

// ---- Panels ----

const panels = [[el.clipToggle, el.clipPanel], [el.keysToggle, el.keysPanel], [el.filesToggle, el.filesPanel]];

function toggleFor(panel) { return panels.find(([, p]) => p === panel)[0]; }

function closePanels() {
  for (const [b, p] of panels) {
    p.hidden = true;
    b.setAttribute('aria-expanded', 'false');
  }
}

for (const [button, panel] of panels) {
  button.addEventListener('click', () => {
    const open = panel.hidden;
    closePanels();
    panel.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (open) {
      showBar();
      if (panel === el.filesPanel) {
        listFiles(files.path);
      }
    } else {
      hideSoon();
    }
  });
}

// ---- Clipboard ----

el.clipSend.addEventListener('click', () => {
  if (!page.rfb || page.state !== 'connected') {
    announce('Not connected: nothing was sent.');
    return;
  }
  page.rfb.clipboardPasteFrom(el.clipText.value);
  announce('Sent to the session\'s clipboard.');
});
el.clipLocal.addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(el.clipText.value);
    announce('Copied to this computer\'s clipboard.');
  } catch (e) {
    el.clipText.select();
    announce('The browser does not allow it: select the text and press Ctrl+C.');
  }
});
el.clipClear.addEventListener('click', () => { el.clipText.value = ''; el.clipText.focus(); });

// ---- Special keys ----

const K = KeyTable;
const CTRL = [K.XK_Control_L, 'ControlLeft'];
const ALT = [K.XK_Alt_L, 'AltLeft'];
const COMBOS = {
  'ctrl-esc': [CTRL, [K.XK_Escape, 'Escape']],
  'alt-tab': [ALT, [K.XK_Tab, 'Tab']],
  'alt-f4': [ALT, [K.XK_F4, 'F4']],
  'super': [[K.XK_Super_L, 'MetaLeft']],
  'print': [[K.XK_Print, 'PrintScreen']],
  'esc': [[K.XK_Escape, 'Escape']],
  'tab': [[K.XK_Tab, 'Tab']],
};
for (let i = 1; i <= 12; i++) {
  COMBOS['f' + i] = [[K['XK_F' + i], 'F' + i]];
  const b = document.createElement('button');
  b.type = 'button';
  b.dataset.keys = 'f' + i;
  b.textContent = 'F' + i;
  el.fkeys.append(b);
}

function sendCombo(name) {
  const rfb = page.rfb;
  if (!rfb || page.state !== 'connected') {
    return;
  }
  if (name === 'ctrl-alt-del') {
    rfb.sendCtrlAltDel();
  } else {
    const keys = COMBOS[name];
    for (const [sym, code] of keys) {
      rfb.sendKey(sym, code, true);
    }
    for (const [sym, code] of [...keys].reverse()) {
      rfb.sendKey(sym, code, false);
    }
  }
  announce('Sent ' + name.replace(/-/g, '+').toUpperCase() + '.');
}

el.keysPanel.addEventListener('click', (e) => {
  const b = e.target.closest('button[data-keys]');
  if (b && !b.disabled) {
    sendCombo(b.dataset.keys);
  }
});

// ---- On-screen keyboard (touch devices) ----

// A touch device shows its keyboard only for a focused text field: the
// Keyboard button focuses an invisible one, and what is typed into it is
// sent to the session as key presses.
const coarse = matchMedia('(pointer: coarse)');
const showKeyboardButton = () => { el.keyboard.hidden = !(coarse.matches || navigator.maxTouchPoints > 0); };
showKeyboardButton();
coarse.addEventListener('change', showKeyboardButton);
el.keyboard.addEventListener('click', () => {
  el.touchInput.value = '';
  el.touchInput.focus();
  hideBar();
});
el.touchInput.addEventListener('input', (e) => {
  const rfb = page.rfb;
  if (rfb && page.state === 'connected') {
    if (e.inputType === 'deleteContentBackward') {
      rfb.sendKey(K.XK_BackSpace, 'Backspace');
    } else if (e.inputType === 'insertLineBreak' || e.inputType === 'insertParagraph') {
      rfb.sendKey(K.XK_Return, 'Enter');
    } else if (e.data) {
      for (const ch of e.data) {
        rfb.sendKey(ch === '\n' ? K.XK_Return : keysyms.lookup(ch.codePointAt(0)));
      }
    }
  }
  el.touchInput.value = '';
});
el.touchInput.addEventListener('keydown', (e) => {
  // Keys that change no text (Enter and Backspace in an empty field on some
  // keyboards, arrows, Tab) come only as key events.
  const named = {Enter: [K.XK_Return, 'Enter'], Backspace: [K.XK_BackSpace, 'Backspace'], Tab: [K.XK_Tab, 'Tab'],
    Escape: [K.XK_Escape, 'Escape'], ArrowLeft: [K.XK_Left, 'ArrowLeft'], ArrowRight: [K.XK_Right, 'ArrowRight'],
    ArrowUp: [K.XK_Up, 'ArrowUp'], ArrowDown: [K.XK_Down, 'ArrowDown']}[e.key];
  if (named && page.rfb && page.state === 'connected') {
    e.preventDefault();
    page.rfb.sendKey(named[0], named[1]);
  }
});

// ---- Files ----

const files = {path: '', canUpload: false, canDownload: false, usable: false, names: new Set()};

function filesPermissions(info) {
  const p = info.permissions || {};
  let why = '';
  if (!info.storage) {
    why = 'This session has no storage folder: its owner did not give it one (StorageRoot) when creating it.';
  } else if (!p.fileDownload && !p.fileUpload) {
    why = 'You may not transfer files in this session (no file-upload or file-download permission).';
  }
  files.usable = !why;
  files.canUpload = !why && !!p.fileUpload;
  files.canDownload = !why && !!p.fileDownload;
  el.filesInput.disabled = !files.canUpload;
  el.filesOverwrite.disabled = !files.canUpload;
  el.filesUp.disabled = !files.usable || files.path === '';
  el.filesRefresh.disabled = !files.usable;
  if (why) {
    filesNote(why, true);
    el.filesList.replaceChildren();
  } else if (!files.canUpload) {
    filesNote('You may download files but not upload them (no file-upload permission).', true);
  } else if (!files.canDownload) {
    filesNote('You may upload files but not download them (no file-download permission).', true);
  } else {
    filesNote('', false);
  }
}

function filesNote(text, warn) {
  el.filesNote.textContent = text;
  el.filesNote.hidden = !text;
  el.filesNote.classList.toggle('warn', !!warn);
}

function filesURL(action, path, extra) {
  return 'files' + action + '?' + qs + '&path=' + encodeURIComponent(path) + (extra || '');
}

function join(dir, name) { return dir ? dir + '/' + name : name; }

function formatSize(n) {
  if (n < 1024) {
    return n + ' B';
  }
  const units = ['KB', 'MB', 'GB', 'TB'];
  let u = -1;
  do { n /= 1024; u++; } while (n >= 1024 && u < units.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + ' ' + units[u];
}

async function listFiles(path) {
  if (!files.usable) {
    return;
  }
  let r;
  try {
    r = await fetch(filesURL('', path), {cache: 'no-store', credentials: 'omit'});
  } catch (e) {
    filesNote('The gateway cannot be reached.', true);
    return;
  }
  if (!r.ok) {
    filesNote('Cannot list the folder: ' + (await r.text().catch(() => '')).trim(), true);
    return;
  }
  const d = await r.json();
  files.path = d.path || '';
  files.canUpload = files.canUpload && d.canUpload !== false;
  files.canDownload = files.canDownload && d.canDownload !== false;
  el.filesUp.disabled = files.path === '';
  el.filesInput.disabled = !files.canUpload;
  el.filesOverwrite.disabled = !files.canUpload;
  el.filesPath.textContent = 'Storage folder' + (files.path ? ' / ' + files.path.split('/').join(' / ') : '');
  const rows = [];
  const entries = (d.entries || []).slice().sort((a, b) => (b.dir - a.dir) || a.name.localeCompare(b.name));
  files.names = new Set(entries.map((f) => f.name));
  for (const f of entries) {
    const tr = document.createElement('tr');
    const name = document.createElement('td');
    if (f.dir) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'link';
      b.textContent = f.name + '/';
      b.setAttribute('aria-label', 'Open folder ' + f.name);
      b.addEventListener('click', () => listFiles(join(files.path, f.name)));
      name.append(b);
    } else if (files.canDownload) {
      const a = document.createElement('a');
      a.href = filesURL('/download', join(files.path, f.name));
      a.download = f.name;
      a.textContent = f.name;
      a.setAttribute('aria-label', 'Download ' + f.name);
      name.append(a);
    } else {
      const s = document.createElement('span');
      s.textContent = f.name;
      name.append(s);
    }
    const size = document.createElement('td');
    size.className = 'num';
    size.textContent = f.dir ? '' : formatSize(f.size);
    const mod = document.createElement('td');
    const t = new Date(f.modified);
    mod.textContent = isNaN(t) ? '' : t.toLocaleString();
    tr.append(name, size, mod);
    rows.push(tr);
  }
  if (d.truncated) {
    filesNote('This folder holds more entries than the panel lists; the first ' + entries.length + ' are shown.', true);
  }
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 3;
    td.textContent = 'This folder is empty.';
    tr.append(td);
    rows.push(tr);
  }
  el.filesList.replaceChildren(...rows);
}

el.filesUp.addEventListener('click', () => listFiles(files.path.split('/').slice(0, -1).join('/')));
el.filesRefresh.addEventListener('click', () => listFiles(files.path));

// upload sends one file with PUT, showing its progress; it resolves to an
// error text, or '' on success.
function upload(file) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const extra = el.filesOverwrite.checked ? '&overwrite=1' : '';
    xhr.open('PUT', filesURL('/upload', join(files.path, file.name), extra));
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) {
        page.upload = {name: file.name, loaded: e.loaded, total: e.total};
        el.filesProgress.value = Math.round(100 * e.loaded / e.total);
        el.filesProgressText.textContent = file.name + ': ' + formatSize(e.loaded) + ' of ' + formatSize(e.total);
      }
    });
    xhr.addEventListener('load', () => {
      if (xhr.status === 201 || xhr.status === 200 || xhr.status === 204) {
        resolve('');
      } else if (xhr.status === 409) {
        resolve(file.name + ' exists already: tick "Replace existing files" to replace it.');
      } else {
        resolve(file.name + ': ' + (xhr.responseText || ('the gateway answered ' + xhr.status)).trim());
      }
    });
    xhr.addEventListener('error', () => resolve(file.name + ': the upload failed (the connection was lost).'));
    xhr.send(file);
  });
}

el.filesInput.addEventListener('change', async () => {
  const list = [...el.filesInput.files];
  if (!list.length || !files.canUpload) {
    return;
  }
  el.filesProgressRow.hidden = false;
  const errors = [];
  for (const f of list) {
    el.filesProgress.value = 0;
    el.filesProgressText.textContent = f.name;
    // A name the folder holds already is refused here, before its bytes
    // are sent: the gateway refuses it too (409), but a large body
    // refused early ends the connection before the browser reads why.
    const err = files.names.has(f.name) && !el.filesOverwrite.checked
      ? f.name + ' exists already: tick "Replace existing files" to replace it.'
      : await upload(f);
    if (err) {
      errors.push(err);
    }
  }
  el.filesInput.value = '';
  el.filesProgressRow.hidden = true;
  const done = list.length - errors.length;
  filesNote(errors.length ? errors.join(' ') : '', errors.length > 0);
  announce(done + ' of ' + list.length + ' file(s) uploaded.');
  listFiles(files.path);
});

connect();
