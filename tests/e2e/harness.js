// What the browser tests share: a chatd of their own (started, killed and
// restarted on one SQLite file), headless Chromium through playwright-core,
// and small waiting helpers. Run by Node.js's main thread.
//
// Environment (set by run-e2e.sh):
//   CHATD_BIN            the built chatd
//   CHATD_TEST_SRCDIR    the source tree, passed as --data-dir (web/, migrations/)
//   CHATD_E2E_ARTIFACTS  where screenshots and chatd's log go
//   CHROMIUM             the browser (default /usr/bin/chromium)
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  throw new Error('playwright-core is not installed under tests/e2e/node_modules ' +
    '(run: scripts/deps.sh test): ' + e.message);
}

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(name + ' is not set (run the suite with tests/e2e/run-e2e.sh)');
  return v;
}

const artifacts = required('CHATD_E2E_ARTIFACTS');

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Calls fn until it returns without throwing, or rethrows its last error
// after timeout ms.
async function eventually(fn, timeout = 10000, what = 'condition') {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      const err = new Error('timed out waiting for ' + what + ': ' + (last && last.message));
      err.cause = last;
      throw err;
    }
    await sleep(100);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// One chatd on loopback with its SQLite file in a temporary directory; it
// can be killed and started again on the same file and port.
class Chatd {
  constructor() {
    this.bin = required('CHATD_BIN');
    this.srcdir = required('CHATD_TEST_SRCDIR');
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-e2e-'));
    this.db = path.join(this.dir, 'chat.db');
    this.logPath = path.join(artifacts, 'chatd.log');
    fs.writeFileSync(this.logPath, '');
    this.proc = null;
    this.port = 0;
  }

  get base() {
    return 'http://127.0.0.1:' + this.port;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const log = fs.openSync(this.logPath, 'a');
    this.proc = spawn(this.bin, ['--listen', '127.0.0.1:' + this.port, '--database', 'sqlite:' + this.db,
      '--data-dir', this.srcdir, '--log-level', 'info'], { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    const proc = this.proc;
    let exited = null;
    this.ended = null;
    proc.once('exit', (code, sig) => {
      exited = code !== null ? 'exit ' + code : 'signal ' + sig;
      // A kill or stop by the tests clears this.proc first.
      if (this.proc === proc) this.ended = exited;
    });
    await eventually(async () => {
      if (exited) throw new Error('chatd ended at start (' + exited + '), see ' + this.logPath);
      const r = await fetch(this.base + '/health');
      if (r.status !== 200) throw new Error('/health answered ' + r.status);
    }, 15000, 'chatd to answer /health');
    if (exited) throw new Error('chatd ended at start (' + exited + ')');
  }

  // SIGKILL: no chance to finish anything, as in a crash.
  async kill() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once('exit', r));
    this.proc = null;
    proc.kill('SIGKILL');
    await gone;
  }

  async stop() {
    const proc = this.proc;
    this.proc = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
      await gone;
      clearTimeout(t);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  // Why chatd is not running when nobody stopped it, or null.
  unexpectedEnd() {
    return this.ended ? 'chatd ended by itself (' + this.ended + '), see ' + this.logPath : null;
  }

  // A JSON call to the HTTP API, for setting up data around the browsers.
  async api(method, p, body, token) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = 'Bearer ' + token;
    const r = await fetch(this.base + p, { method, headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }
}

async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(CHROMIUM + ' does not exist: install Debian\'s chromium (run: scripts/deps.sh test)');
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 60000 });
}

// Saves a screenshot among the artifacts and returns its path.
async function shot(page, name) {
  const file = path.join(artifacts, name + '.png');
  await page.screenshot({ path: file });
  return file;
}

module.exports = { Chatd, launchBrowser, shot, eventually, sleep, artifacts };
