// The chatd browser client: plain JavaScript over the HTTP API. Every text
// from the server is shown with textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
let me = null;
let current = null;

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const msg = data && data.error ? data.error.message : res.statusText;
    throw Object.assign(new Error(msg), { status: res.status });
  }
  return data;
}

function show(signedIn) {
  $('auth').hidden = signedIn;
  $('chat').hidden = !signedIn;
  $('whoami').textContent = signedIn ? 'Signed in as ' + me.username : '';
}

async function refresh() {
  const { conversations } = await api('GET', '/api/conversations');
  const list = $('conversations');
  list.replaceChildren();
  for (const c of conversations) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    const others = c.members.filter((m) => m.user_id !== me.user_id).map((m) => m.username);
    b.textContent = c.title || others.join(', ');
    if (c.unread > 0) {
      const u = document.createElement('span');
      u.className = 'unread';
      u.textContent = String(c.unread);
      u.setAttribute('aria-label', c.unread + ' unread');
      b.append(u);
    }
    b.addEventListener('click', () => open(c, b.firstChild.textContent));
    li.append(b);
    list.append(li);
  }
}

async function open(c, title) {
  current = c;
  $('thread').hidden = false;
  $('thread-title').textContent = title;
  const { messages } = await api('GET', `/api/conversations/${c.conversation_id}/messages`);
  const ol = $('messages');
  ol.replaceChildren();
  for (const m of messages) {
    const li = document.createElement('li');
    const s = document.createElement('span');
    s.className = 'sender';
    s.textContent = m.sender;
    li.append(s, document.createTextNode(m.body));
    ol.append(li);
  }
  ol.scrollTop = ol.scrollHeight;
  if (messages.length) {
    await api('POST', `/api/conversations/${c.conversation_id}/read`, { seq: messages[messages.length - 1].seq });
  }
  await refresh();
}

async function signIn(register) {
  const username = $('username').value.trim();
  const password = $('password').value;
  $('auth-error').textContent = '';
  try {
    if (register) await api('POST', '/api/register', { username, password });
    const r = await api('POST', '/api/login', { username, password });
    me = { user_id: r.user_id, username: r.username };
    show(true);
    await refresh();
  } catch (e) {
    $('auth-error').textContent = e.message;
  }
}

$('auth-form').addEventListener('submit', (e) => { e.preventDefault(); signIn(false); });
$('register').addEventListener('click', () => signIn(true));
$('logout').addEventListener('click', async () => {
  await api('POST', '/api/logout').catch(() => {});
  me = null;
  show(false);
});
$('new-conv').addEventListener('submit', async (e) => {
  e.preventDefault();
  const members = $('members').value.split(',').map((s) => s.trim()).filter(Boolean);
  try {
    const c = await api('POST', '/api/conversations', { members });
    await refresh();
    await open(c, c.title || members.join(', '));
  } catch (err) {
    alert(err.message);
  }
});
$('send-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!current) return;
  const body = $('body').value;
  const client_msg_id = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
  await api('POST', `/api/conversations/${current.conversation_id}/messages`, { body, client_msg_id });
  $('body').value = '';
  await open(current, $('thread-title').textContent);
});

api('GET', '/api/me').then((u) => { me = u; show(true); return refresh(); }).catch(() => show(false));
