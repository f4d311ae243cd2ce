// End-to-end tests of the browser client in headless Chromium: real users'
// steps in real pages against a real chatd on SQLite. The tests run in
// order and build on each other (alice and bob register first, then talk).
// Run by Node.js's test runner, one process; see run-e2e.sh.
'use strict';

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Chatd, launchBrowser, shot, eventually, sleep, artifacts } = require('./harness');

const PASSWORD = 'correct horse battery';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 740 };
const STEP_TIMEOUT = 90000;

let chatd;
let browser;
const pages = new Map(); // label -> page, for screenshots on failure
const pageErrors = [];   // uncaught exceptions and policy violations, any page

function watch(page, label) {
  pages.set(label, page);
  page.on('pageerror', (e) => pageErrors.push(label + ': ' + e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/.test(m.text())) {
      pageErrors.push(label + ': ' + m.text());
    }
  });
  return page;
}

async function newPage(label, viewport = DESKTOP, extra = {}) {
  const ctx = await browser.newContext({ viewport, ...extra });
  return watch(await ctx.newPage(), label);
}

// A test step that leaves a screenshot of every open page when it fails.
function step(name, fn) {
  test(name, { timeout: STEP_TIMEOUT }, async () => {
    try {
      await fn();
    } catch (e) {
      const why = chatd && chatd.unexpectedEnd();
      if (why) e.message = why + '; ' + e.message;
      const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40);
      for (const [label, page] of pages) {
        if (!page.isClosed()) await shot(page, 'FAILED-' + slug + '-' + label).catch(() => {});
      }
      throw e;
    }
  });
}

async function texts(page, sel) {
  return page.locator(sel).allTextContents();
}

async function waitOnline(page) {
  await page.locator('#conn[data-state="online"]').waitFor({ timeout: 15000 });
}

async function fillAuth(page, username) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
}

async function sendText(page, text) {
  await page.locator('#body').fill(text);
  await page.locator('#body').press('Enter');
}

function convItem(page, name) {
  return page.locator('#conv-list li').filter({ has: page.locator('.conv-name', { hasText: name }) });
}

// The bodies of the messages shown, in order.
async function bodies(page) {
  return texts(page, '#messages li.msg .body');
}

describe('the chatd browser client', () => {
  let alice;
  let bob;
  let directId;

  before(async () => {
    console.log('# artifacts (screenshots, chatd.log): ' + artifacts);
    chatd = new Chatd();
    await chatd.start();
    browser = await launchBrowser();
    console.log('# chatd at ' + chatd.base + ', ' + browser.version());
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    if (chatd) await chatd.stop();
  });

  step('a newcomer registers and logs in; a wrong password is refused', async () => {
    alice = await newPage('alice');
    await alice.goto(chatd.base + '/');
    await alice.locator('#auth-screen').waitFor();
    assert.equal(await alice.evaluate(() => document.activeElement.id), 'username',
      'the username field has the focus');
    await shot(alice, '01-login');

    await fillAuth(alice, 'alice');
    await alice.getByRole('button', { name: 'Log in' }).click();
    await alice.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();

    await fillAuth(alice, 'alice');
    await alice.getByRole('button', { name: 'Create account' }).click();
    await waitOnline(alice);
    assert.equal(await alice.locator('#whoami').textContent(), 'alice');
    assert.equal(await alice.locator('#conn-text').textContent(), 'Online');
    await alice.locator('#conv-empty').waitFor();

    bob = await newPage('bob');
    await bob.goto(chatd.base + '/');
    await fillAuth(bob, 'bob');
    await bob.getByRole('button', { name: 'Create account' }).click();
    await waitOnline(bob);

    // The session is an HttpOnly cookie: the page's script cannot read it.
    assert.equal(await bob.evaluate(() => document.cookie), '');
    const cookies = await bob.context().cookies();
    const c = cookies.find((x) => x.name === 'chat_session');
    assert.ok(c && c.httpOnly && c.sameSite === 'Strict', 'chat_session is HttpOnly, SameSite=Strict');
  });

  step('alice starts a conversation with bob; messages go both ways, unread rises and clears', async () => {
    await alice.getByLabel('Start a conversation').fill('bob');
    await alice.getByRole('button', { name: 'Start' }).click();
    await alice.locator('#chat-title', { hasText: 'bob' }).waitFor();
    assert.equal(await alice.evaluate(() => document.activeElement.id), 'body',
      'the message box has the focus in a new conversation');
    directId = Number(/#c(\d+)/.exec(alice.url())[1]);

    // Presence: bob is connected, so alice sees him online.
    await alice.locator('#chat-sub', { hasText: 'Online' }).waitFor();
    await convItem(alice, 'bob').locator('.presence.online').waitFor();

    await sendText(alice, 'Hi Bob! 👋');
    await alice.locator('#messages li.msg.mine[data-status="sent"]', { hasText: 'Hi Bob!' }).waitFor();

    // bob has no conversation open: it shows up with one unread.
    const item = convItem(bob, 'alice');
    await item.locator('.badge', { hasText: /^1$/ }).waitFor();
    await item.locator('.presence.online').waitFor();
    assert.match(await item.locator('.conv-preview').textContent(), /Hi Bob!/);

    await sendText(alice, 'Are you there?');
    await item.locator('.badge', { hasText: /^2$/ }).waitFor();
    assert.equal(await bob.title(), '(2) chatd');
    assert.match(await item.locator('button').getAttribute('aria-label'), /2 unread/);
    await shot(bob, '02-conversation-list-unread');

    // bob opens it: the badge clears and alice sees her message read.
    await item.locator('button').click();
    await bob.locator('#chat-title', { hasText: 'alice' }).waitFor();
    await eventually(async () => {
      assert.deepEqual(await bodies(bob), ['Hi Bob! 👋', 'Are you there?']);
    }, 10000, 'bob to see both messages');
    await eventually(async () => {
      assert.equal(await item.locator('.badge').count(), 0);
      assert.equal(await bob.title(), 'chatd');
    }, 10000, 'the unread badge to clear');
    await alice.locator('#messages li.msg.mine .status', { hasText: 'Seen' }).waitFor();

    await sendText(bob, 'Hello Alice, yes I am here.');
    await alice.locator('#messages li.msg.theirs .body', { hasText: 'Hello Alice, yes I am here.' }).waitFor();
    assert.equal(await convItem(alice, 'bob').locator('.badge').count(), 0,
      'no unread badge for the conversation alice is reading');
    await eventually(async () => {
      assert.deepEqual(await bodies(alice), ['Hi Bob! 👋', 'Are you there?', 'Hello Alice, yes I am here.']);
    }, 5000, 'alice to see the conversation in order');
    await shot(alice, '03-chat');
  });

  step('alice sees bob typing, and the indicator goes away', async () => {
    // Typing at a person's pace, for longer than the server's 2 s throttle
    // (bob's last message counted as typing too).
    const typing = bob.locator('#body').pressSequentially('I am typing something long, slowly', { delay: 100 });
    await alice.locator('#typing', { hasText: 'bob is typing…' }).waitFor({ timeout: 6000 });
    await convItem(alice, 'bob').locator('.typing-preview').waitFor();
    await typing;
    await shot(alice, '04-typing');
    await bob.locator('#body').fill('');
    await eventually(async () => {
      assert.equal(await alice.locator('#typing').textContent(), '');
    }, 8000, 'the typing indicator to end');
  });

  step('presence: bob leaves and comes back', async () => {
    const ctx = bob.context();
    await bob.close();
    pages.delete('bob');
    await alice.locator('#chat-sub', { hasText: 'Offline' }).waitFor({ timeout: 10000 });
    assert.equal(await convItem(alice, 'bob').locator('.presence.online').count(), 0);

    bob = watch(await ctx.newPage(), 'bob');
    await bob.goto(chatd.base + '/');
    await waitOnline(bob); // the cookie logs him straight in
    await alice.locator('#chat-sub', { hasText: 'Online' }).waitFor({ timeout: 10000 });
    await convItem(bob, 'alice').locator('.presence.online').waitFor();
  });

  step('a reload keeps the history and the open conversation', async () => {
    await convItem(bob, 'alice').locator('button').click();
    await bob.locator('#chat-title', { hasText: 'alice' }).waitFor();
    await bob.reload();
    await waitOnline(bob);
    await bob.locator('#chat-title', { hasText: 'alice' }).waitFor();
    await eventually(async () => {
      assert.deepEqual(await bodies(bob), ['Hi Bob! 👋', 'Are you there?', 'Hello Alice, yes I am here.']);
    }, 10000, 'the history after a reload');
  });

  step('a message with <script> in it is shown as text', async () => {
    const evil = '<script>window.__injected = 1</script><img src=x onerror="window.__injected = 2"><b>bold?</b>';
    await sendText(alice, evil);
    const shown = bob.locator('#messages li.msg .body').last();
    await eventually(async () => {
      assert.equal(await shown.textContent(), evil);
    }, 10000, 'bob to see the message');
    for (const page of [alice, bob]) {
      assert.equal(await page.locator('#messages script, #messages img, #messages b').count(), 0,
        'no element came out of the message text');
      assert.equal(await page.locator('#conv-list script, #conv-list img, #conv-list b').count(), 0);
      assert.equal(await page.evaluate(() => window.__injected), undefined, 'no injected code ran');
    }
    assert.ok(await shown.isVisible(), 'the text is visible');
    assert.match(await convItem(bob, 'alice').locator('.conv-preview').textContent(), /<script>/);
  });

  step('a group conversation pages in its history as bob scrolls up', async () => {
    assert.equal((await chatd.api('POST', '/api/register', { username: 'carol', password: PASSWORD })).status, 201);
    const login = await chatd.api('POST', '/api/login', { username: 'carol', password: PASSWORD });
    const token = login.body.token;
    const conv = await chatd.api('POST', '/api/conversations',
      { members: ['alice', 'bob'], title: 'Book club' }, token);
    assert.equal(conv.status, 201);
    const id = conv.body.conversation_id;
    for (let i = 1; i <= 130; i++) {
      const r = await chatd.api('POST', '/api/conversations/' + id + '/messages',
        { body: 'Chapter ' + i, client_msg_id: 'carol-' + i }, token);
      assert.equal(r.status, 201);
    }

    // bob is reading alice's conversation: the group appears with its count.
    const item = convItem(bob, 'Book club');
    await item.locator('.badge', { hasText: '99+' }).waitFor({ timeout: 15000 });
    await eventually(async () => {
      assert.match(await item.locator('button').getAttribute('aria-label'), /, 130 unread,/);
    }, 10000, 'the unread count to reach 130');
    await shot(bob, '05-conversation-list-group');

    await item.locator('button').click();
    await bob.locator('#chat-title', { hasText: 'Book club' }).waitFor();
    await eventually(async () => {
      const b = await bodies(bob);
      assert.equal(b.length, 50);
      assert.equal(b[49], 'Chapter 130');
    }, 10000, 'the newest page');
    await shot(bob, '06-group-chat');

    // Scrolling to the top loads the page before, keeping what is shown.
    for (const expected of [100, 130]) {
      await bob.locator('#scroller').evaluate((s) => { s.scrollTop = 0; });
      await eventually(async () => {
        assert.equal((await bodies(bob)).length, expected);
      }, 10000, expected + ' messages after scrolling up');
    }
    await bob.locator('#history-start', { hasText: 'beginning of the conversation' }).waitFor();
    const all = await bodies(bob);
    assert.deepEqual(all, Array.from({ length: 130 }, (_, i) => 'Chapter ' + (i + 1)));
    assert.equal(await item.locator('.badge').count(), 0);
  });

  step('alice starts a named group by usernames; an unknown name is refused', async () => {
    await alice.getByLabel('Start a conversation').fill('nobody_here');
    await alice.getByRole('button', { name: 'Start' }).click();
    await alice.locator('#new-error', { hasText: 'nobody_here' }).waitFor();

    await alice.getByLabel('Start a conversation').fill('bob, carol');
    await alice.getByLabel('Group name (optional)').fill('Weekend plans');
    await alice.getByRole('button', { name: 'Start' }).click();
    await alice.locator('#chat-title', { hasText: 'Weekend plans' }).waitFor();
    assert.match(await alice.locator('#chat-sub').textContent(), /you, bob, carol/);
    await alice.locator('#history-start', { hasText: 'No messages yet' }).waitFor();
    await sendText(alice, 'Hike on Saturday?');
    await alice.locator('#messages li.msg.mine[data-status="sent"]', { hasText: 'Hike on Saturday?' }).waitFor();

    const item = convItem(bob, 'Weekend plans');
    await item.locator('.badge', { hasText: /^1$/ }).waitFor();
    assert.equal(await item.locator('.conv-preview').textContent(), 'alice: Hike on Saturday?');
    await convItem(alice, 'bob').locator('button').click();
    await alice.locator('#chat-title', { hasText: 'bob' }).waitFor();
  });

  step('a message refused by the server is shown as failed and sent again by Retry', async () => {
    // A second tab of alice whose socket refuses her first "FAIL ONCE"
    // message the way a busy server does; everything else passes through.
    const page = watch(await alice.context().newPage(), 'alice-2');
    let refused = 0;
    await page.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => {
        const f = JSON.parse(m);
        if (f.type === 'send' && f.body.startsWith('FAIL ONCE') && refused++ === 0) {
          ws.send(JSON.stringify({ type: 'error', code: 'busy', message: 'queue full',
            ref: f.client_msg_id }));
          return;
        }
        server.send(m);
      });
      server.onMessage((m) => ws.send(m));
    });
    await page.goto(chatd.base + '/#c' + directId);
    await waitOnline(page);
    await page.locator('#chat-title', { hasText: 'bob' }).waitFor();

    await sendText(page, 'FAIL ONCE: see you at 8');
    const failed = page.locator('#messages li.msg[data-status="failed"]');
    await failed.waitFor();
    assert.match(await failed.locator('.status').textContent(), /Not sent: the server is busy/);
    const cmid = await failed.getAttribute('data-cmid');
    await shot(page, '07-failed-message');

    await failed.getByRole('button', { name: /Retry/ }).click();
    await page.locator('#messages li.msg.mine[data-status="sent"]', { hasText: 'FAIL ONCE' }).waitFor();
    assert.equal(await page.locator('#messages li.msg[data-status="failed"]').count(), 0);

    await bob.locator('#conv-list li .conv-name', { hasText: 'alice' }).click();
    await eventually(async () => {
      const b = (await bodies(bob)).filter((x) => x.startsWith('FAIL ONCE'));
      assert.deepEqual(b, ['FAIL ONCE: see you at 8']);
    }, 10000, 'bob to see the retried message once');
    const hist = await page.evaluate(async (id) => {
      const r = await fetch('/api/conversations/' + id + '/messages?limit=200');
      return (await r.json()).messages;
    }, directId);
    const stored = hist.filter((m) => m.body.startsWith('FAIL ONCE'));
    assert.equal(stored.length, 1, 'stored once');
    assert.equal(stored[0].client_msg_id, cmid, 'the retry used the same client_msg_id');
    await page.close();
    pages.delete('alice-2');
  });

  step('chatd is killed and restarted while alice sends: bob sees every message once', async () => {
    await alice.locator('#chat-title', { hasText: 'bob' }).waitFor();
    await bob.locator('#chat-title', { hasText: 'alice' }).waitFor();
    const N = 24;
    const want = Array.from({ length: N }, (_, i) => 'Crash test ' + (i + 1));
    const crash = async (page) => (await bodies(page)).filter((b) => b.startsWith('Crash test'));

    for (let i = 0; i < N; i++) {
      await sendText(alice, want[i]);
      await sleep(120);
      if (i === 7) {
        // SIGKILL with messages in flight. bob's network goes away too, so
        // that what alice sends again after the restart reaches him only
        // through the sync of his reconnect.
        await chatd.kill();
        await bob.context().setOffline(true);
        await eventually(async () => {
          assert.notEqual(await bob.locator('#conn').getAttribute('data-state'), 'online');
        }, 5000, 'bob to notice the lost connection');
        await shot(bob, '08-reconnecting');
      }
      if (i === 15) await chatd.start();
    }

    await waitOnline(alice);
    await eventually(async () => {
      assert.equal(await alice.locator('#messages li.msg.pending, #messages li.msg.failed').count(), 0);
    }, 40000, 'every message of alice to be acknowledged');
    assert.deepEqual(await crash(alice), want, 'alice sees each of her messages once, in order');
    const before = await crash(bob);
    assert.ok(before.length < N, 'bob, offline, has not seen them all yet (' + before.length + ')');
    assert.notEqual(await bob.locator('#conn').getAttribute('data-state'), 'online');

    await bob.context().setOffline(false);
    await waitOnline(bob);
    await eventually(async () => {
      assert.deepEqual(await crash(bob), want);
    }, 30000, 'bob to see every acknowledged message exactly once');

    const r = await bob.evaluate(async (id) => {
      const res = await fetch('/api/conversations/' + id + '/messages?limit=200');
      return (await res.json()).messages.map((m) => m.body);
    }, directId);
    assert.deepEqual(r.filter((b) => b.startsWith('Crash test')), want, 'stored once each');
    assert.equal(await bob.locator('#conn-text').textContent(), 'Online');
  });

  step('at phone width: the list, then one conversation with a way back', async () => {
    const phone = await newPage('phone', PHONE, { isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    await phone.goto(chatd.base + '/');
    await phone.locator('#auth-screen').waitFor();
    await shot(phone, '09-phone-login');
    await fillAuth(phone, 'bob');
    await phone.getByRole('button', { name: 'Log in' }).click();
    await waitOnline(phone);
    await convItem(phone, 'alice').waitFor();
    assert.ok(await phone.locator('.sidebar').isVisible());
    assert.ok(!(await phone.locator('#chat').isVisible()), 'one pane at a time');
    await shot(phone, '10-phone-list');

    // Keyboard: Enter on a conversation opens it with the focus in the box.
    await convItem(phone, 'alice').locator('button').focus();
    await phone.keyboard.press('Enter');
    await phone.locator('#chat-title', { hasText: 'alice' }).waitFor();
    assert.equal(await phone.evaluate(() => document.activeElement.id), 'body');
    await phone.keyboard.type('Typed on a phone');
    await phone.keyboard.press('Enter');
    await phone.locator('#messages li.msg.mine[data-status="sent"]', { hasText: 'Typed on a phone' }).waitFor();
    await alice.locator('#messages li.msg.theirs', { hasText: 'Typed on a phone' }).waitFor();
    assert.ok(!(await phone.locator('.sidebar').isVisible()));
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, 'nothing sticks out sideways (' + overflow + ' px)');
    const box = await phone.locator('#body').boundingBox();
    assert.ok(box && box.y + box.height <= PHONE.height, 'the message box is on screen');
    await shot(phone, '11-phone-chat');

    await phone.getByRole('button', { name: 'Back to conversations' }).click();
    await phone.locator('.sidebar').waitFor();
    assert.equal(await phone.evaluate(() => document.activeElement.closest('li') &&
      document.activeElement.closest('li').dataset.convId), String(directId),
    'the focus returns to the conversation left');
    await phone.context().close();
    pages.delete('phone');
  });

  step('logging out ends the session in this browser', async () => {
    await alice.getByRole('button', { name: 'Log out' }).click();
    await alice.locator('#auth-screen').waitFor();
    await alice.getByRole('alert').filter({ hasText: 'You have logged out.' }).waitFor();
    await alice.reload();
    await alice.locator('#auth-screen').waitFor();
    assert.equal(await alice.locator('#app-screen').isVisible(), false);
    await bob.locator('#chat-sub', { hasText: 'Offline' }).waitFor({ timeout: 10000 });
  });

  step('no page had an uncaught error or a policy violation; chatd stayed up', async () => {
    assert.deepEqual(pageErrors, []);
    assert.equal(chatd.unexpectedEnd(), null);
    console.log('# screenshots in ' + path.resolve(artifacts));
  });
});
