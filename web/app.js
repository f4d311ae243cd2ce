// The chatd browser client: plain JavaScript, no build step, run by the
// browser's main thread only.
//
// It speaks the HTTP API for accounts, the conversation list and history,
// and the chat.v1 WebSocket for everything live: messages, acks, typing,
// read markers and presence. The session lives in the HttpOnly chat_session
// cookie, which the WebSocket handshake carries too, so the page never keeps
// a token.
//
// Nothing is lost across a dropped connection: every conversation remembers
// the last seq it has seen, a reconnect sends `sync` with those, and a gap
// in what arrives (a truncated sync, a race) is filled over HTTP. Messages
// the user wrote stay pending until their ack; unacknowledged ones are sent
// again after a reconnect under the same client_msg_id, which the server
// stores once.
//
// Text from the server is always put in the page with textContent, never
// parsed as HTML. The page runs under a strict Content-Security-Policy: no
// inline script or style, no eval.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const HISTORY_PAGE = 50;
  const GAP_PAGE = 200;
  const GAP_MAX_PAGES = 5;
  const MAX_BODY_BYTES = 16384;
  const ACK_TIMEOUT_MS = 15000;
  const TYPING_SEND_MS = 2000;
  const TYPING_SHOW_MS = 4000;
  const PING_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;
  const RETRY_BASE_MS = 500;
  const RETRY_MAX_MS = 15000;
  const SYNC_MAX = 1000;

  const encoder = new TextEncoder();

  // Everything the page knows. Conversations are kept whether or not they
  // are on screen; only the open one is rendered message by message.
  const state = {
    me: null,                 // { user_id, username }
    convs: new Map(),         // conversation_id -> conversation state
    openId: null,             // the conversation on screen
    online: new Map(),        // user_id -> boolean
    presenceStamp: new Map(), // user_id -> count of presence frames seen
    pending: new Map(),       // client_msg_id -> outgoing message
    ws: null,
    conn: 'offline',          // offline | connecting | online | reconnecting
    retries: 0,
    retryTimer: null,
    retryAt: 0,
    countdownTimer: null,
    pingTimer: null,
    pongTimer: null,
    synced: false,
    listLoading: null,
    listAgain: false,
    cmidPrefix: randomId(),
    cmidCounter: 0,
    nextLocal: 0,
    suggestTimer: null,
    early: new Map(),         // conversation_id -> message frames that came
                              // before the list told of the conversation
  };

  // ---------------------------------------------------------------- helpers

  function randomId() {
    const a = new Uint8Array(8);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function bytes(s) {
    return encoder.encode(s).length;
  }

  // A stable colour for a name, from a fixed palette of CSS classes (the
  // style policy forbids inline styles).
  function hue(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return 'hue-' + (h % 8);
  }

  function initials(name) {
    const parts = name.split(/[\s,._-]+/).filter(Boolean);
    if (parts.length === 0) return '?';
    const first = (w) => String.fromCodePoint(w.codePointAt(0));
    return (parts.length > 1 ? first(parts[0]) + first(parts[1]) : first(parts[0])).toUpperCase();
  }

  function fillAvatar(node, name, group) {
    node.className = 'avatar ' + hue(name) + (group ? ' group' : '');
    node.textContent = initials(name);
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() &&
      a.getDate() === b.getDate();
  }

  function shortTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return sameDay(d, new Date()) ? timeFmt.format(d) : dayFmt.format(d);
  }

  function messageTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return sameDay(d, new Date()) ? timeFmt.format(d) : dayFmt.format(d) + ', ' + timeFmt.format(d);
  }

  function announce(text) {
    const a = $('announcer');
    a.textContent = '';
    // A change of content a moment later is what screen readers notice.
    setTimeout(() => { a.textContent = text; }, 50);
  }

  function clip(s, n) {
    return s.length > n ? s.slice(0, n - 1) + '…' : s;
  }

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, body) {
    const opts = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.');
    }
    let data = null;
    if (res.status !== 204) data = await res.json().catch(() => null);
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      if (res.status === 401 && err.code === 'unauthorized' && state.me) sessionEnded();
      throw new ApiError(res.status, err.code || 'http_' + res.status,
        err.message || res.statusText || 'Request failed',
        Number(res.headers.get('Retry-After')) || 0);
    }
    return data;
  }

  // ------------------------------------------------------- screens, auth

  function showAuth(message) {
    $('app-screen').hidden = true;
    $('account').hidden = true;
    $('conn').hidden = true;
    $('auth-screen').hidden = false;
    document.body.classList.remove('signed-in');
    $('auth-error').textContent = message || '';
    document.title = 'chatd';
    $('username').focus();
  }

  function showApp() {
    $('auth-screen').hidden = true;
    $('app-screen').hidden = false;
    document.body.classList.add('signed-in');
    $('account').hidden = false;
    $('conn').hidden = false;
    $('whoami').textContent = state.me.username;
    $('whoami').title = 'Logged in as ' + state.me.username;
  }

  function authFields() {
    const username = $('username').value.trim();
    const password = $('password').value;
    if (!/^[A-Za-z0-9_.-]{3,32}$/.test(username)) {
      return { error: 'A username is 3 to 32 letters, digits, "_", "." or "-".', focus: 'username' };
    }
    if (bytes(password) < 8) {
      return { error: 'A password has at least 8 characters.', focus: 'password' };
    }
    return { username, password };
  }

  function authBusy(busy) {
    $('login').disabled = busy;
    $('register').disabled = busy;
  }

  function authFailed(e) {
    let msg = e.message;
    if (e.code === 'invalid_credentials') msg = 'Wrong username or password.';
    else if (e.code === 'username_taken') msg = 'That username is taken. Pick another, or log in.';
    else if (e.code === 'too_many_attempts') {
      msg = 'Too many failed attempts. Try again in ' + (e.retryAfter || 30) + ' seconds.';
    }
    $('auth-error').textContent = msg;
  }

  async function doLogin(username, password) {
    const r = await api('POST', '/api/login', { username, password });
    // The token in r stays here: the HttpOnly cookie carries the session.
    state.me = { user_id: r.user_id, username: r.username };
    $('password').value = '';
    await enterApp();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const f = authFields();
    if (f.error) {
      $('auth-error').textContent = f.error;
      $(f.focus).focus();
      return;
    }
    authBusy(true);
    try {
      await doLogin(f.username, f.password);
    } catch (e) {
      authFailed(e);
    } finally {
      authBusy(false);
    }
  }

  async function onRegister() {
    const f = authFields();
    if (f.error) {
      $('auth-error').textContent = f.error;
      $(f.focus).focus();
      return;
    }
    authBusy(true);
    try {
      await api('POST', '/api/register', { username: f.username, password: f.password });
      await doLogin(f.username, f.password);
    } catch (e) {
      authFailed(e);
    } finally {
      authBusy(false);
    }
  }

  async function onLogout() {
    $('logout').disabled = true;
    // Closed first, so that the server's closing of it does not look like
    // a dropped connection to reconnect.
    closeSocket();
    try {
      await api('POST', '/api/logout');
    } catch (e) {
      // The session is gone either way from this page's point of view.
    }
    $('logout').disabled = false;
    leaveApp();
    showAuth('You have logged out.');
  }

  // The server no longer knows this session (expired, logged out elsewhere).
  function sessionEnded() {
    if (!state.me) return;
    leaveApp();
    showAuth('Your session has ended. Please log in again.');
  }

  function leaveApp() {
    state.me = null;
    closeSocket();
    for (const p of state.pending.values()) clearTimeout(p.timer);
    state.pending.clear();
    for (const c of state.convs.values()) clearTyping(c);
    state.convs.clear();
    state.early.clear();
    state.online.clear();
    state.openId = null;
    setConn('offline');
    $('conv-list').replaceChildren();
    $('messages').replaceChildren();
    $('chat-view').hidden = true;
    $('chat-empty').hidden = false;
    document.body.classList.remove('chat-open');
    history.replaceState(null, '', location.pathname);
  }

  async function enterApp() {
    showApp();
    await loadConversations();
    const m = /^#c(\d+)$/.exec(location.hash);
    if (m && state.convs.has(Number(m[1]))) openConversation(Number(m[1]), false);
    else $('new-members').focus();
    connect();
  }

  // ------------------------------------------------------- conversations

  function newConv(c) {
    return {
      id: c.conversation_id,
      kind: c.kind,
      title: c.title,
      members: c.members,
      last: null,        // newest message known
      lastSeq: 0,        // highest seq seen, for sync
      activity: 0,       // ms, for the order of the list
      unread: 0,
      readSent: 0,       // the highest seq this page reported read
      readBy: new Map(), // other user_id -> seq, from read frames
      typing: new Map(), // user_id -> timeout
      msgs: new Map(),   // seq -> message, the loaded window
      loaded: false,     // newest page fetched
      minSeq: 0,         // lowest loaded seq
      maxSeq: 0,         // highest contiguous loaded seq
      hasMore: false,
      loadingOlder: false,
      filling: false,
      els: new Map(),    // seq or client_msg_id -> <li>
    };
  }

  function convName(c) {
    if (c.title) return c.title;
    const others = c.members.filter((m) => m.user_id !== state.me.user_id);
    if (others.length === 0) return state.me.username;
    return others.map((m) => m.username).join(', ');
  }

  function others(c) {
    return c.members.filter((m) => m.user_id !== state.me.user_id);
  }

  // While the page is not connected it cannot know who is online.
  function onlineOthers(c) {
    if (state.conn !== 'online') return [];
    return others(c).filter((m) => state.online.get(m.user_id));
  }

  function memberName(c, userId) {
    const m = c.members.find((x) => x.user_id === userId);
    return m ? m.username : 'someone';
  }

  // Fetches the list and merges it with what the page knows. What the page
  // saw more recently over the WebSocket (a higher seq) wins over the list.
  async function loadConversations() {
    if (state.listLoading) {
      state.listAgain = true;
      return state.listLoading;
    }
    state.listLoading = (async () => {
      try {
        const r = await api('GET', '/api/conversations');
        mergeConversations(r.conversations);
      } catch (e) {
        if (e.status !== 401) console.warn('conversation list:', e.message);
      } finally {
        state.listLoading = null;
      }
      if (state.listAgain && state.me) {
        state.listAgain = false;
        await loadConversations();
      }
    })();
    return state.listLoading;
  }

  function mergeConversations(list) {
    if (!state.me) return;
    const fresh = [];
    // The server orders by latest activity, creation included, which the
    // page cannot see for a conversation without messages: keep its order.
    let floor = 0;
    for (let i = list.length - 1; i >= 0; i--) {
      const lm = list[i].last_message;
      const t = lm ? Date.parse(lm.created_at) : 0;
      floor = Math.max(Number.isNaN(t) ? 0 : t, floor + 1);
      list[i].rank = floor;
    }
    for (const item of list) {
      let c = state.convs.get(item.conversation_id);
      if (!c) {
        c = newConv(item);
        state.convs.set(c.id, c);
        fresh.push(c);
      }
      c.members = item.members;
      c.title = item.title;
      const lm = item.last_message;
      const serverSeq = lm ? lm.seq : 0;
      if (serverSeq >= c.lastSeq) {
        if (lm) c.last = lm;
        c.lastSeq = serverSeq;
        c.unread = item.unread;
      }
      c.activity = Math.max(c.activity, item.rank);
      if (c.loaded && c.lastSeq > c.maxSeq) fillGap(c);
    }
    for (const [id, frames] of state.early) {
      const c = state.convs.get(id);
      if (!c) continue;
      state.early.delete(id);
      for (const m of frames) acceptMessage(c, m, true);
    }
    if (state.openId !== null && isReading()) markRead(state.convs.get(state.openId));
    renderList();
    if (fresh.length) refreshPresence(fresh);
  }

  function sortedConvs() {
    return Array.from(state.convs.values()).sort((a, b) => b.activity - a.activity || b.id - a.id);
  }

  function renderList() {
    const ul = $('conv-list');
    const items = [];
    let total = 0;
    for (const c of sortedConvs()) {
      items.push(convItem(c));
      total += c.unread;
    }
    // Keep keyboard focus on the same conversation across a re-render.
    const focused = document.activeElement && document.activeElement.closest &&
      document.activeElement.closest('#conv-list li');
    const focusId = focused ? focused.dataset.convId : null;
    ul.replaceChildren(...items);
    if (focusId) {
      const b = ul.querySelector('li[data-conv-id="' + focusId + '"] button');
      if (b) b.focus();
    }
    $('conv-empty').hidden = items.length > 0;
    document.title = total > 0 ? '(' + total + ') chatd' : 'chatd';
    if (state.openId !== null) renderChatHead();
  }

  function convItem(c) {
    const li = el('li');
    li.dataset.convId = String(c.id);
    const b = el('button', 'conv');
    b.type = 'button';
    if (c.id === state.openId) {
      b.classList.add('active');
      b.setAttribute('aria-current', 'true');
    }
    if (c.unread > 0) b.classList.add('has-unread');
    const name = convName(c);
    const group = c.kind === 'group';

    const av = el('span');
    fillAvatar(av, name, group);
    av.setAttribute('aria-hidden', 'true');
    const wrap = el('span', 'avatar-wrap');
    wrap.append(av);
    const on = onlineOthers(c).length > 0;
    const dot = el('span', 'presence' + (on ? ' online' : ''));
    dot.setAttribute('aria-hidden', 'true');
    wrap.append(dot);

    const text = el('span', 'conv-text');
    const top = el('span', 'conv-top');
    top.append(el('span', 'conv-name', name));
    if (c.last) {
      const t = el('time', 'conv-time', shortTime(c.last.created_at));
      t.dateTime = c.last.created_at;
      top.append(t);
    }
    const bottom = el('span', 'conv-bottom');
    const typers = Array.from(c.typing.keys());
    let preview;
    if (typers.length) {
      preview = el('span', 'conv-preview typing-preview',
        (group ? typers.map((u) => memberName(c, u)).join(', ') + ' ' : '') + 'typing…');
    } else if (c.last) {
      const who = c.last.sender_id === state.me.user_id ? 'You: ' : (group ? c.last.sender + ': ' : '');
      preview = el('span', 'conv-preview', who + c.last.body.replace(/\s+/g, ' '));
    } else {
      preview = el('span', 'conv-preview muted', 'No messages yet');
    }
    bottom.append(preview);
    if (c.unread > 0) {
      const badge = el('span', 'badge', c.unread > 99 ? '99+' : String(c.unread));
      badge.setAttribute('aria-hidden', 'true');
      bottom.append(badge);
    }
    text.append(top, bottom);
    b.append(wrap, text);

    // One sentence for screen readers instead of the pieces above.
    let label = name;
    if (!group) label += on ? ', online' : ', offline';
    else if (on) label += ', ' + onlineOthers(c).length + ' online';
    if (c.unread > 0) label += ', ' + c.unread + ' unread';
    if (c.last) label += ', last message from ' + c.last.sender + ': ' + clip(c.last.body, 80);
    b.setAttribute('aria-label', label);
    b.addEventListener('click', () => openConversation(c.id, true));
    li.append(b);
    return li;
  }

  function splitNames(s) {
    return s.split(/[\s,;]+/).map((x) => x.replace(/^@/, '')).filter(Boolean);
  }

  async function onNewConversation(ev) {
    ev.preventDefault();
    const names = splitNames($('new-members').value);
    $('new-error').textContent = '';
    if (names.length === 0) {
      $('new-error').textContent = 'Type the username of the person to talk to.';
      $('new-members').focus();
      return;
    }
    const body = { members: names };
    const title = $('new-title').value.trim();
    if (names.length > 1 && title) body.title = title;
    const btn = ev.target.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const c = await api('POST', '/api/conversations', body);
      $('new-members').value = '';
      $('new-title').value = '';
      $('new-title-row').hidden = true;
      let conv = state.convs.get(c.conversation_id);
      if (!conv) {
        conv = newConv(c);
        conv.activity = Date.now();
        state.convs.set(conv.id, conv);
        refreshPresence([conv]);
      }
      renderList();
      openConversation(conv.id, true);
    } catch (e) {
      let msg = e.message;
      if (e.code === 'unknown_user') msg = e.message.charAt(0).toUpperCase() + e.message.slice(1) + '.';
      else if (e.code === 'invalid_members') msg = 'Name someone other than yourself.';
      else if (e.code === 'invalid_username') msg = 'That is not a valid username.';
      $('new-error').textContent = msg;
      $('new-members').focus();
    } finally {
      btn.disabled = false;
    }
  }

  function onMembersInput() {
    const v = $('new-members').value;
    $('new-title-row').hidden = splitNames(v).length < 2;
    clearTimeout(state.suggestTimer);
    const prefix = v.trim();
    if (!prefix || /[\s,;]/.test(prefix)) return;
    state.suggestTimer = setTimeout(async () => {
      try {
        const r = await api('GET', '/api/users?prefix=' + encodeURIComponent(prefix));
        const opts = r.users.filter((u) => u.user_id !== state.me.user_id).slice(0, 8).map((u) => {
          const o = document.createElement('option');
          o.value = u.username;
          return o;
        });
        $('user-suggest').replaceChildren(...opts);
      } catch (e) {
        // Suggestions are a convenience; the form still works without.
      }
    }, 200);
  }

  // ------------------------------------------------------------ presence

  // The WebSocket tells who comes and goes; who is online already is read
  // over HTTP for each contact.
  async function refreshPresence(convs) {
    const byName = new Map();
    for (const c of convs || state.convs.values()) {
      for (const m of others(c)) byName.set(m.username.toLowerCase(), m);
    }
    const stamps = new Map();
    for (const m of byName.values()) stamps.set(m.user_id, state.presenceStamp.get(m.user_id) || 0);
    const queue = Array.from(byName.values());
    const worker = async () => {
      while (queue.length && state.me) {
        const m = queue.shift();
        try {
          const r = await api('GET', '/api/users?prefix=' + encodeURIComponent(m.username));
          const u = r.users.find((x) => x.user_id === m.user_id);
          // A presence frame that came in meanwhile is newer than this answer.
          if (u && (state.presenceStamp.get(m.user_id) || 0) === stamps.get(m.user_id)) {
            state.online.set(u.user_id, !!u.online);
          }
        } catch (e) {
          if (e.status === 401) return;
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    if (state.me) renderList();
  }

  function onPresence(f) {
    state.presenceStamp.set(f.user_id, (state.presenceStamp.get(f.user_id) || 0) + 1);
    state.online.set(f.user_id, !!f.online);
    renderList();
  }

  // ---------------------------------------------------------- chat view

  function isReading() {
    return document.visibilityState === 'visible' && state.openId !== null && !$('chat-view').hidden;
  }

  function openConversation(id, focusComposer) {
    const c = state.convs.get(id);
    if (!c) return;
    const prev = state.openId !== null ? state.convs.get(state.openId) : null;
    if (prev && prev !== c) saveDraft(prev);
    state.openId = id;
    history.replaceState(null, '', '#c' + id);
    document.body.classList.add('chat-open');
    $('chat-empty').hidden = true;
    $('chat-view').hidden = false;
    $('composer-error').textContent = '';
    $('body').value = c.draft || '';
    autoGrow();
    renderChatHead();
    renderList();
    renderMessages({ toBottom: true });
    renderTyping();
    if (!c.loaded) loadNewest(c);
    else markRead(c);
    if (focusComposer) $('body').focus();
  }

  function closeConversation() {
    const c = state.convs.get(state.openId);
    if (c) saveDraft(c);
    const id = state.openId;
    state.openId = null;
    history.replaceState(null, '', location.pathname);
    document.body.classList.remove('chat-open');
    $('chat-view').hidden = true;
    $('chat-empty').hidden = false;
    renderList();
    const b = $('conv-list').querySelector('li[data-conv-id="' + id + '"] button');
    if (b) b.focus();
  }

  function saveDraft(c) {
    c.draft = $('body').value;
  }

  function renderChatHead() {
    const c = state.convs.get(state.openId);
    if (!c) return;
    const name = convName(c);
    $('chat-title').textContent = name;
    fillAvatar($('chat-avatar'), name, c.kind === 'group');
    const sub = $('chat-sub');
    const on = onlineOthers(c);
    if (c.kind === 'direct' && state.conn !== 'online') {
      sub.textContent = '';
    } else if (c.kind === 'direct') {
      sub.textContent = on.length ? 'Online' : 'Offline';
      sub.className = on.length ? 'online-text' : 'muted';
    } else {
      const names = c.members.map((m) => m.user_id === state.me.user_id ? 'you' : m.username);
      sub.textContent = names.join(', ') + (on.length ? ' · ' + on.length + ' online' : '');
      sub.className = 'muted';
    }
  }

  async function loadNewest(c) {
    $('history-loading').hidden = false;
    try {
      const r = await api('GET', '/api/conversations/' + c.id + '/messages?limit=' + HISTORY_PAGE);
      for (const m of r.messages) storeMessage(c, m);
      c.loaded = true;
      c.hasMore = r.has_more;
      c.minSeq = r.messages.length ? r.messages[0].seq : 0;
      recomputeMax(c);
      if (r.messages.length) noteMessage(c, r.messages[r.messages.length - 1], false);
    } catch (e) {
      if (state.openId === c.id) $('composer-error').textContent = 'Could not load the messages: ' + e.message;
    } finally {
      $('history-loading').hidden = true;
    }
    if (state.openId !== c.id) return;
    renderMessages({ toBottom: true });
    markRead(c);
    fillViewport(c);
  }

  // Loads older pages while the list does not fill its box, so that there
  // is something to scroll.
  async function fillViewport(c) {
    const s = $('scroller');
    while (state.openId === c.id && c.hasMore && s.scrollHeight <= s.clientHeight + 40) {
      if (!(await loadOlder(c))) break;
    }
  }

  async function loadOlder(c) {
    if (c.loadingOlder || !c.hasMore || !c.loaded) return false;
    c.loadingOlder = true;
    $('history-loading').hidden = false;
    $('load-older').hidden = true;
    let ok = false;
    try {
      const before = c.minSeq || (c.maxSeq + 1);
      const r = await api('GET', '/api/conversations/' + c.id + '/messages?limit=' +
        HISTORY_PAGE + '&before_seq=' + before);
      for (const m of r.messages) storeMessage(c, m);
      if (r.messages.length) c.minSeq = r.messages[0].seq;
      c.hasMore = r.has_more && r.messages.length > 0;
      ok = true;
    } catch (e) {
      if (state.openId === c.id) $('composer-error').textContent = 'Could not load older messages: ' + e.message;
    } finally {
      c.loadingOlder = false;
      $('history-loading').hidden = true;
    }
    if (state.openId === c.id) renderMessages({ keepBottomOffset: true });
    return ok;
  }

  // Fetches over HTTP what is missing after the highest contiguous seq
  // (a sync that was truncated, a message that arrived before an older one).
  async function fillGap(c) {
    if (c.filling || !c.loaded) return;
    c.filling = true;
    try {
      for (let page = 0; page < GAP_MAX_PAGES; page++) {
        const r = await api('GET', '/api/conversations/' + c.id + '/messages?limit=' + GAP_PAGE +
          '&after_seq=' + c.maxSeq);
        for (const m of r.messages) {
          storeMessage(c, m);
          noteMessage(c, m, false);
        }
        recomputeMax(c);
        if (!r.has_more || r.messages.length === 0) break;
        if (page === GAP_MAX_PAGES - 1) {
          // Too far behind to page forward: start again from the newest.
          c.msgs.clear();
          c.els.clear();
          c.loaded = false;
          if (state.openId === c.id) loadNewest(c);
          return;
        }
      }
    } catch (e) {
      console.warn('catching up', c.id, e.message);
    } finally {
      c.filling = false;
    }
    if (state.openId === c.id) {
      renderMessages({});
      markRead(c);
    }
  }

  function storeMessage(c, m) {
    if (c.msgs.has(m.seq)) return false;
    c.msgs.set(m.seq, m);
    return true;
  }

  function recomputeMax(c) {
    let s = c.maxSeq;
    if (s < c.minSeq - 1 || s === 0) s = c.minSeq ? c.minSeq - 1 : 0;
    while (c.msgs.has(s + 1)) s++;
    c.maxSeq = s;
  }

  // Updates the list-level view of a conversation for a message it has:
  // the preview, the seq to sync from, the unread count.
  function noteMessage(c, m, live) {
    const isNew = m.seq > c.lastSeq;
    if (isNew) {
      c.lastSeq = m.seq;
      c.last = m;
      const t = Date.parse(m.created_at);
      c.activity = Math.max(c.activity, Number.isNaN(t) ? Date.now() : t, live ? Date.now() : 0);
      if (m.sender_id !== state.me.user_id) {
        if (!(state.openId === c.id && isReading())) c.unread++;
      } else {
        // Sending moves the sender's own marker.
        c.unread = 0;
        c.readSent = Math.max(c.readSent, m.seq);
      }
    }
    return isNew;
  }

  function messageEl(c, m, pending) {
    const key = pending ? 'p:' + pending.cmid : m.seq;
    let li = c.els.get(key);
    if (li) return li;
    const mine = pending || m.sender_id === state.me.user_id;
    li = el('li', 'msg ' + (mine ? 'mine' : 'theirs'));
    const bubble = el('div', 'bubble');
    const sender = el('span', 'sender', mine ? 'You' : m.sender);
    if (!mine) sender.classList.add(hue(m.sender));
    bubble.append(sender);
    const body = el('p', 'body');
    body.textContent = pending ? pending.body : m.body;
    bubble.append(body);
    const meta = el('span', 'meta');
    const time = el('time');
    meta.append(time);
    const status = el('span', 'status');
    meta.append(status);
    bubble.append(meta);
    li.append(bubble);
    if (pending) {
      li.dataset.cmid = pending.cmid;
    } else {
      li.dataset.seq = String(m.seq);
      li.dataset.cmid = m.client_msg_id || '';
      time.dateTime = m.created_at;
      time.textContent = messageTime(m.created_at);
      time.title = fullFmt.format(new Date(m.created_at));
    }
    c.els.set(key, li);
    return li;
  }

  function setPendingLook(li, p) {
    li.classList.toggle('pending', p.status !== 'failed');
    li.classList.toggle('failed', p.status === 'failed');
    li.dataset.status = p.status === 'failed' ? 'failed' : 'pending';
    const status = li.querySelector('.status');
    let retry = li.querySelector('.retry');
    if (p.status === 'failed') {
      status.textContent = 'Not sent' + (p.reason ? ': ' + p.reason : '');
      if (!retry) {
        retry = el('button', 'retry link', 'Retry');
        retry.type = 'button';
        retry.setAttribute('aria-label', 'Retry sending: ' + clip(p.body, 40));
        retry.addEventListener('click', () => retrySend(p.cmid));
        li.append(retry);
      }
    } else {
      status.textContent = state.conn === 'online' ? 'Sending…' : 'Waiting for connection…';
      if (retry) retry.remove();
    }
  }

  // Draws the open conversation from its loaded messages plus its pending
  // ones. Elements are kept per message, so a redraw only reorders them.
  function renderMessages(opts) {
    const c = state.convs.get(state.openId);
    if (!c) return;
    const s = $('scroller');
    const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 60;
    const fromBottom = s.scrollHeight - s.scrollTop;

    const seqs = Array.from(c.msgs.keys()).sort((a, b) => a - b);
    const group = c.kind === 'group';
    const items = [];
    let prev = null;

    // The newest of my messages that another member has read gets "Seen".
    let seenSeq = 0;
    let seenBy = [];
    const readers = Array.from(c.readBy.entries());
    for (let i = seqs.length - 1; i >= 0; i--) {
      const m = c.msgs.get(seqs[i]);
      if (m.sender_id !== state.me.user_id) continue;
      const who = readers.filter(([, r]) => r >= m.seq).map(([u]) => memberName(c, u));
      if (who.length) {
        seenSeq = m.seq;
        seenBy = who;
        break;
      }
    }

    for (const seq of seqs) {
      const m = c.msgs.get(seq);
      const li = messageEl(c, m, null);
      const cont = prev && prev.sender_id === m.sender_id &&
        Date.parse(m.created_at) - Date.parse(prev.created_at) < 5 * 60 * 1000;
      li.classList.toggle('cont', !!cont);
      li.classList.toggle('show-sender', group && !cont);
      li.dataset.status = 'sent';
      const status = li.querySelector('.status');
      if (seq === seenSeq) {
        status.textContent = group ? 'Seen by ' + seenBy.join(', ') : 'Seen';
      } else {
        status.textContent = '';
      }
      items.push(li);
      prev = m;
    }
    const mine = Array.from(state.pending.values()).filter((p) => p.convId === c.id)
      .sort((a, b) => a.order - b.order);
    for (const p of mine) {
      const li = messageEl(c, null, p);
      li.classList.remove('cont');
      setPendingLook(li, p);
      items.push(li);
    }
    $('messages').replaceChildren(...items);

    $('load-older').hidden = !(c.loaded && c.hasMore) || c.loadingOlder;
    $('history-start').hidden = !(c.loaded && !c.hasMore && (seqs.length > 0 || mine.length > 0));
    if (c.loaded && seqs.length === 0 && mine.length === 0) {
      $('history-start').hidden = false;
      $('history-start').textContent = 'No messages yet. Say hello!';
    } else {
      $('history-start').textContent = 'This is the beginning of the conversation.';
    }

    if (opts.toBottom || (opts.stick && atBottom) || (!opts.keepBottomOffset && atBottom)) {
      s.scrollTop = s.scrollHeight;
    } else if (opts.keepBottomOffset) {
      s.scrollTop = s.scrollHeight - fromBottom;
    }
  }

  function onScroll() {
    const c = state.convs.get(state.openId);
    if (!c) return;
    if ($('scroller').scrollTop < 120) loadOlder(c);
  }

  // --------------------------------------------------------------- typing

  function renderTyping() {
    const c = state.convs.get(state.openId);
    const t = $('typing');
    if (!c || c.typing.size === 0) {
      t.textContent = '';
      t.classList.remove('active');
      return;
    }
    const names = Array.from(c.typing.keys()).map((u) => memberName(c, u));
    t.textContent = names.length === 1 ? names[0] + ' is typing…' :
      names.slice(0, -1).join(', ') + ' and ' + names[names.length - 1] + ' are typing…';
    t.classList.add('active');
  }

  function onTyping(f) {
    const c = state.convs.get(f.conversation_id);
    if (!c || f.user_id === state.me.user_id) return;
    clearTimeout(c.typing.get(f.user_id));
    c.typing.set(f.user_id, setTimeout(() => {
      c.typing.delete(f.user_id);
      if (state.openId === c.id) renderTyping();
      renderList();
    }, TYPING_SHOW_MS));
    if (state.openId === c.id) renderTyping();
    renderList();
  }

  function clearTyping(c, userId) {
    for (const [u, t] of c.typing) {
      if (userId === undefined || u === userId) {
        clearTimeout(t);
        c.typing.delete(u);
      }
    }
  }

  function onComposerInput() {
    autoGrow();
    $('composer-error').textContent = '';
    const c = state.convs.get(state.openId);
    if (!c || !$('body').value.trim() || state.conn !== 'online') return;
    const now = Date.now();
    if (now - (c.typingSent || 0) < TYPING_SEND_MS) return;
    c.typingSent = now;
    wsSend({ type: 'typing', conversation_id: c.id });
  }

  function autoGrow() {
    const b = $('body');
    b.style.height = 'auto';
    b.style.height = Math.min(b.scrollHeight, 160) + 'px';
  }

  // -------------------------------------------------------------- sending

  function onComposerKey(ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    } else if (ev.key === 'Escape' && document.body.classList.contains('chat-open') &&
               window.matchMedia('(max-width: 720px)').matches) {
      closeConversation();
    }
  }

  function onSend(ev) {
    ev.preventDefault();
    const c = state.convs.get(state.openId);
    if (!c) return;
    const body = $('body').value;
    if (!body.trim()) {
      $('body').focus();
      return;
    }
    const n = bytes(body);
    if (n > MAX_BODY_BYTES) {
      $('composer-error').textContent = 'This message is too long: ' + n.toLocaleString() +
        ' bytes, at most ' + MAX_BODY_BYTES.toLocaleString() + '.';
      return;
    }
    const p = {
      cmid: state.cmidPrefix + '-' + (++state.cmidCounter),
      convId: c.id,
      body,
      status: 'queued', // queued (not on the wire) | sent (awaiting ack) | failed
      reason: '',
      order: ++state.nextLocal,
      timer: null,
    };
    state.pending.set(p.cmid, p);
    $('body').value = '';
    c.draft = '';
    autoGrow();
    c.typingSent = 0;
    transmit(p);
    renderMessages({ toBottom: true });
    $('body').focus();
  }

  function transmit(p) {
    if (state.conn !== 'online') {
      p.status = 'queued';
      return;
    }
    p.status = 'sent';
    clearTimeout(p.timer);
    p.timer = setTimeout(() => failPending(p.cmid, 'no answer from the server'), ACK_TIMEOUT_MS);
    wsSend({ type: 'send', conversation_id: p.convId, body: p.body, client_msg_id: p.cmid });
  }

  function retrySend(cmid) {
    const p = state.pending.get(cmid);
    if (!p) return;
    p.reason = '';
    transmit(p);
    if (state.openId === p.convId) {
      renderMessages({ toBottom: true });
      $('body').focus();
    }
  }

  function failPending(cmid, reason) {
    const p = state.pending.get(cmid);
    if (!p) return;
    clearTimeout(p.timer);
    p.status = 'failed';
    p.reason = reason;
    if (state.openId === p.convId) renderMessages({});
    announce('Message not sent: ' + reason);
  }

  // A message of ours is stored: the pending bubble gives way to the real one.
  function settlePending(cmid, m) {
    const p = state.pending.get(cmid);
    if (!p) return;
    clearTimeout(p.timer);
    state.pending.delete(cmid);
    const c = state.convs.get(p.convId);
    if (!c) return;
    const li = c.els.get('p:' + cmid);
    c.els.delete('p:' + cmid);
    if (li && !c.els.has(m.seq)) {
      // Reuse the element so that focus and position do not jump.
      li.classList.remove('pending', 'failed');
      li.dataset.seq = String(m.seq);
      const t = li.querySelector('time');
      t.dateTime = m.created_at;
      t.textContent = messageTime(m.created_at);
      t.title = fullFmt.format(new Date(m.created_at));
      const r = li.querySelector('.retry');
      if (r) r.remove();
      c.els.set(m.seq, li);
    }
  }

  function onAck(f) {
    const p = state.pending.get(f.client_msg_id);
    if (!p) return;
    const c = state.convs.get(p.convId);
    const m = {
      message_id: f.message_id,
      conversation_id: p.convId,
      seq: f.seq,
      sender_id: state.me.user_id,
      sender: state.me.username,
      body: p.body,
      client_msg_id: f.client_msg_id,
      created_at: f.created_at,
    };
    settlePending(f.client_msg_id, m);
    if (!c) return;
    acceptMessage(c, m, true);
  }

  const ERROR_TEXT = {
    busy: 'the server is busy',
    unavailable: 'the server could not store it',
    rate_limited: 'too many messages at once',
    message_too_large: 'too long',
    empty_message: 'empty',
    not_a_member: 'you are not in this conversation',
    not_found: 'the conversation no longer exists',
  };

  function onErrorFrame(f) {
    if (f.ref && state.pending.has(f.ref)) {
      failPending(f.ref, ERROR_TEXT[f.code] || f.message || f.code);
      return;
    }
    console.warn('chatd error frame:', f.code, f.message, f.ref);
  }

  // ------------------------------------------------------------ messages

  function acceptMessage(c, m, live) {
    const isNew = noteMessage(c, m, live);
    if (c.loaded) {
      storeMessage(c, m);
      if (m.seq > c.maxSeq + 1) fillGap(c);
      else recomputeMax(c);
    }
    clearTyping(c, m.sender_id);
    if (state.openId === c.id) {
      renderMessages({ stick: true, toBottom: m.sender_id === state.me.user_id && live });
      renderTyping();
      markRead(c);
    }
    renderList();
    return isNew;
  }

  function onMessage(f) {
    const m = f.message;
    if (!m || typeof m.seq !== 'number') return;
    const c = state.convs.get(m.conversation_id);
    if (!c) {
      // Someone started a conversation with us: the list tells its members.
      // Frames that arrive meanwhile are kept, since the list may have been
      // read before they were stored.
      if (!state.early.has(m.conversation_id)) state.early.set(m.conversation_id, []);
      state.early.get(m.conversation_id).push(m);
      loadConversations();
      return;
    }
    if (m.sender_id === state.me.user_id && m.client_msg_id && state.pending.has(m.client_msg_id)) {
      settlePending(m.client_msg_id, m);
    }
    const isNew = acceptMessage(c, m, true);
    if (isNew && m.sender_id !== state.me.user_id && state.synced) {
      const where = c.kind === 'group' ? ' in ' + convName(c) : '';
      announce(m.sender + where + ': ' + clip(m.body, 200));
    }
  }

  function onRead(f) {
    const c = state.convs.get(f.conversation_id);
    if (!c) return;
    if (f.user_id === state.me.user_id) {
      // Read on another device.
      c.readSent = Math.max(c.readSent, f.seq);
      c.unread = Math.max(0, Math.min(c.unread, c.lastSeq - f.seq));
      renderList();
      return;
    }
    if (f.seq > (c.readBy.get(f.user_id) || 0)) c.readBy.set(f.user_id, f.seq);
    if (state.openId === c.id) renderMessages({});
  }

  function markRead(c) {
    if (!c || state.openId !== c.id || !isReading()) return;
    if (c.unread > 0) {
      c.unread = 0;
      renderList();
    }
    if (c.lastSeq <= c.readSent) return;
    c.readSent = c.lastSeq;
    if (state.conn === 'online') {
      wsSend({ type: 'read', conversation_id: c.id, seq: c.lastSeq });
    } else {
      api('POST', '/api/conversations/' + c.id + '/read', { seq: c.lastSeq }).catch(() => {
        c.readSent = 0;
      });
    }
  }

  // ------------------------------------------------------------ WebSocket

  function setConn(s, detail) {
    const prev = state.conn;
    state.conn = s;
    const box = $('conn');
    box.dataset.state = s;
    const text = {
      offline: 'Offline',
      connecting: 'Connecting…',
      online: 'Online',
      reconnecting: 'Reconnecting…',
    }[s];
    $('conn-text').textContent = detail || text;
    $('conn-retry').hidden = s !== 'reconnecting';
    if (state.me && s !== prev) renderList();
    // What waits for the connection says so.
    const c = state.convs.get(state.openId);
    if (c && Array.from(state.pending.values()).some((p) => p.convId === c.id)) renderMessages({});
  }

  function connect() {
    if (!state.me || state.ws) return;
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    setConn(state.retries ? 'reconnecting' : 'connecting', state.retries ? 'Reconnecting…' : undefined);
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try {
      ws = new WebSocket(url, 'chat.v1');
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    state.synced = false;
    // With the session cookie on the handshake the server answers `ready`
    // by itself; there is no token to send.
    ws.onmessage = (ev) => onFrame(ws, ev.data);
    ws.onclose = (ev) => onClose(ws, ev);
    ws.onerror = () => {};
  }

  function closeSocket() {
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    clearInterval(state.pingTimer);
    clearTimeout(state.pongTimer);
    if (state.ws) {
      const ws = state.ws;
      state.ws = null;
      ws.onclose = null;
      ws.onmessage = null;
      try { ws.close(1000); } catch (e) { /* already closing */ }
    }
  }

  function wsSend(obj) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    state.ws.send(JSON.stringify(obj));
    return true;
  }

  function onFrame(ws, data) {
    if (ws !== state.ws) return;
    let f;
    try {
      f = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
    case 'ready': onReady(f); break;
    case 'message': onMessage(f); break;
    case 'ack': onAck(f); break;
    case 'read': onRead(f); break;
    case 'typing': onTyping(f); break;
    case 'presence': onPresence(f); break;
    case 'synced': onSynced(f); break;
    case 'pong': clearTimeout(state.pongTimer); break;
    case 'error': onErrorFrame(f); break;
    default: break;
    }
  }

  function onReady() {
    state.retries = 0;
    setConn('online');
    // Everything not yet acknowledged goes out again, under the same
    // client_msg_id: the server stores each once.
    const queued = Array.from(state.pending.values()).filter((p) => p.status !== 'failed')
      .sort((a, b) => a.order - b.order);
    for (const p of queued) transmit(p);
    const since = {};
    let n = 0;
    for (const c of sortedConvs()) {
      if (n++ >= SYNC_MAX) break;
      since[String(c.id)] = c.lastSeq;
    }
    wsSend({ type: 'sync', since });
    clearInterval(state.pingTimer);
    state.pingTimer = setInterval(() => {
      if (!wsSend({ type: 'ping' })) return;
      clearTimeout(state.pongTimer);
      state.pongTimer = setTimeout(() => {
        // The connection is dead without having said so: start over.
        if (state.ws) state.ws.close(4000, 'no pong');
      }, PONG_TIMEOUT_MS);
    }, PING_MS);
    refreshPresence();
  }

  function onSynced(f) {
    state.synced = true;
    for (const id of f.truncated || []) {
      const c = state.convs.get(id);
      if (c && c.loaded) fillGap(c);
    }
    // The list is the authority on unread counts and on conversations
    // started while this page was away.
    loadConversations();
    const c = state.convs.get(state.openId);
    if (c) markRead(c);
  }

  function onClose(ws, ev) {
    if (ws !== state.ws) return;
    state.ws = null;
    clearInterval(state.pingTimer);
    clearTimeout(state.pongTimer);
    // What was on the wire without an ack goes out again after reconnecting.
    for (const p of state.pending.values()) {
      if (p.status === 'sent') {
        clearTimeout(p.timer);
        p.status = 'queued';
      }
    }
    if (!state.me) return;
    if (ev.code === 4401 || ev.code === 1008) {
      // Refused: find out whether the session still exists.
      api('GET', '/api/me').then(() => scheduleReconnect(), (e) => {
        if (e.status !== 401) scheduleReconnect();
      });
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (!state.me) return;
    const base = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** state.retries);
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    state.retries++;
    state.retryAt = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      setConn('reconnecting', left > 0 ? 'Reconnecting in ' + left + ' s…' : 'Reconnecting…');
    };
    tick();
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(tick, 1000);
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(() => {
      clearInterval(state.countdownTimer);
      connect();
    }, delay);
  }

  function reconnectNow() {
    if (!state.me || state.ws) return;
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    connect();
  }

  // ---------------------------------------------------------------- start

  function onVisibility() {
    if (document.visibilityState !== 'visible') return;
    const c = state.convs.get(state.openId);
    if (c) markRead(c);
    if (state.me && !state.ws) reconnectNow();
  }

  async function start() {
    $('auth-form').addEventListener('submit', onLogin);
    $('register').addEventListener('click', onRegister);
    $('logout').addEventListener('click', onLogout);
    $('new-conv').addEventListener('submit', onNewConversation);
    $('new-members').addEventListener('input', onMembersInput);
    $('composer').addEventListener('submit', onSend);
    $('body').addEventListener('input', onComposerInput);
    $('body').addEventListener('keydown', onComposerKey);
    $('scroller').addEventListener('scroll', onScroll, { passive: true });
    $('load-older').addEventListener('click', () => {
      const c = state.convs.get(state.openId);
      if (c) loadOlder(c).then(() => $('scroller').focus());
    });
    $('back').addEventListener('click', closeConversation);
    $('conn-retry').addEventListener('click', reconnectNow);
    document.addEventListener('visibilitychange', onVisibility);
    window.addEventListener('online', reconnectNow);
    window.addEventListener('focus', () => {
      const c = state.convs.get(state.openId);
      if (c) markRead(c);
    });

    try {
      const me = await api('GET', '/api/me');
      state.me = { user_id: me.user_id, username: me.username };
      await enterApp();
    } catch (e) {
      showAuth(e.status === 401 || e.status === 0 ? '' : e.message);
      if (e.status === 0) $('auth-error').textContent = e.message;
    }
  }

  start();
})();
