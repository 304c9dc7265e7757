// One browser session against a running gateway (tools/demo.sh run): headless
// Debian Chromium driven by playwright-core.  Prints one JSON line with what
// the page showed; saves screenshots into <out dir>.
// usage: node e2e.js guard|terminate|socketio <gateway base URL> <out dir>
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [mode, base, outDir] = process.argv.slice(2);
const TIMEOUT = 10000;
const VIEWPORT = { width: 900, height: 760 };

// #state of a page once it matches re.
const settledOn = (page, re) => page.waitForFunction(
  (src) => new RegExp(src).test(document.getElementById('state').textContent), re.source);
const text = (page, sel) => page.locator(sel).innerText();

async function login(page, username, password) {
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([page.waitForNavigation(), page.click('#login-button')]);
}

// socket.io mode: two browsers (alice, an admin, and bob, a user; each its
// own cookie jar) on socketio.html, connected to nginx's own socket.io.
async function socketio(browser, out) {
  const open = async (who) => {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on('console', (m) => out.console.push(`${who}: ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => out.console.push(`${who}: pageerror: ${e.message}`));
    return page;
  };
  const FINAL = /rejected|accepted|disconnected/;
  const adminSettled = (page) => page.waitForFunction(
    () => /refused|joined|disconnected/.test(document.getElementById('admin-state').textContent));
  const notices = (page, hasText) => page.locator('#log li', { hasText }).count();
  const screenshot = (page, name) => page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });

  // Not logged in: the page connects anyway and shows connect_error's message.
  const alice = await open('alice');
  await alice.goto(`${base}/socketio.html`);
  await settledOn(alice, FINAL);
  await adminSettled(alice);
  out.before = await text(alice, '#state');
  out.admin_before = await text(alice, '#admin-state');
  await screenshot(alice, 'socketio-logged-out');

  // alice (admin) logs in with the form: greeted from Lua, let into /admin.
  await login(alice, 'alice', 'wonderland');
  await settledOn(alice, FINAL);
  await adminSettled(alice);
  out.me = await text(alice, '#me');
  out.after = await text(alice, '#state');
  out.greeting = await text(alice, '#greeting');
  out.rooms = await text(alice, '#rooms');
  out.admin_state = await text(alice, '#admin-state');
  // the client's default options: connected over long-polling, then upgraded
  await alice.locator('#log li', { hasText: 'upgraded to websocket' }).first().waitFor();
  out.connected_over = await alice.locator('#log li', { hasText: 'connected to /' }).first().innerText();
  out.upgraded = await notices(alice, 'upgraded to websocket');

  // bob (user), in another browser context: greeted, refused on /admin.
  const bob = await open('bob');
  await bob.goto(`${base}/socketio.html`);
  await settledOn(bob, FINAL);
  await login(bob, 'bob', 'builder');
  await settledOn(bob, FINAL);
  await adminSettled(bob);
  out.bob_after = await text(bob, '#state');
  out.bob_greeting = await text(bob, '#greeting');
  out.bob_admin_state = await text(bob, '#admin-state');
  await screenshot(bob, 'socketio-bob');

  // alice announces to a role (an event with an ack on /admin; the gateway's
  // passport.emit{ filter = role, event = "notice" }): to the admins, then to
  // the users.  Each notice reaches that role's page only.
  const announce = async (role, message) => {
    await alice.selectOption('#announce-role', role);
    await alice.fill('#announce-text', message);
    await alice.evaluate(() => { document.getElementById('announce-result').textContent = ''; });
    await alice.click('#announce-button');
    await alice.waitForFunction(
      () => /published|refused|no ack/.test(document.getElementById('announce-result').textContent));
    return text(alice, '#announce-result');
  };
  out.announce_admins = await announce('admin', 'to the admins');
  const toAdmins = alice.locator('#log li', { hasText: 'notice from alice' });
  await toAdmins.first().waitFor();
  out.alice_notice = await toAdmins.first().innerText();
  out.announce_users = await announce('user', 'to the users');
  const toUsers = bob.locator('#log li', { hasText: 'notice from alice' });
  await toUsers.first().waitFor();
  out.bob_notice = await toUsers.first().innerText();
  await alice.waitForTimeout(500); // time for a wrong delivery to show
  out.alice_notices = await notices(alice, 'notice from');
  out.bob_notices = await notices(bob, 'notice from');
  await screenshot(alice, 'socketio');

  // alice logs out without leaving the page: the gateway disconnects her
  // sockets ("io server disconnect"); bob stays connected.
  await alice.click('#logout-button');
  await settledOn(alice, /disconnected/);
  await alice.waitForFunction(() => /disconnected/.test(document.getElementById('admin-state').textContent));
  await alice.waitForTimeout(1000); // a reconnection would show by now
  out.after_logout = await text(alice, '#state');
  out.admin_after_logout = await text(alice, '#admin-state');
  out.reconnects = await notices(alice, 'reconnecting');
  out.bob_after_logout = await text(bob, '#state');
  await screenshot(alice, 'socketio-after-logout');
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // --no-sandbox: Chromium refuses to run as root with its sandbox;
    // --disable-dev-shm-usage: containers often have a tiny /dev/shm; the
    // others keep it off the network (nothing but loopback is reachable).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  const out = { mode, console: [] };
  if (mode === 'socketio') {
    try {
      await socketio(browser, out);
    } finally {
      await browser.close();
    }
    console.log(JSON.stringify(out));
    return;
  }
  try {
    const page = await browser.newPage({ viewport: VIEWPORT });
    page.setDefaultTimeout(TIMEOUT);
    page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
    const state = () => page.locator('#state').innerText();
    const settled = (re) => page.waitForFunction(
      (src) => new RegExp(src).test(document.getElementById('state').textContent), re.source);

    // Not logged in: the page tries anyway and shows the gateway's verdict.
    await page.goto(`${base}${mode === 'terminate' ? '/terminate.html' : '/'}`);
    await settled(/rejected|accepted|closed/);
    out.before = await state();
    await page.screenshot({ path: path.join(outDir, `${mode}-logged-out.png`), fullPage: true });

    // Log in with the form (a real POST through the gateway to the app).
    await page.fill('#username', 'alice');
    await page.fill('#password', 'wonderland');
    await Promise.all([page.waitForNavigation(), page.click('#login-button')]);
    await settled(/rejected|accepted|closed/);
    out.me = await page.locator('#me').innerText();
    out.after = await state();
    out.greeting = await page.locator('#greeting').innerText();
    if (mode === 'guard') out.headers = await page.locator('#headers').innerText();
    await page.screenshot({ path: path.join(outDir, `${mode}.png`), fullPage: true });

    if (mode === 'terminate') {
      // An admin's announcement to the role "admin" comes back over the socket
      // (passport.emit from Lua, through Redis, to every worker).
      await page.selectOption('#announce-role', 'admin');
      await page.fill('#announce-text', 'to the admins');
      await page.click('#announce-button');
      await page.waitForFunction(() => /published|refused/.test(document.getElementById('announce-result').textContent));
      out.announce_result = await page.locator('#announce-result').innerText();
      const item = page.locator('#log li', { hasText: 'announcement from' });
      await item.first().waitFor();
      out.announcement = await item.first().innerText();
      // What the page sends is read by the gateway's Lua loop and emitted to everyone.
      await page.fill('#chat-text', 'hi from the browser');
      await page.click('#chat-button');
      const said = page.locator('#log li', { hasText: 'alice says:' });
      await said.first().waitFor();
      out.chat = await said.first().innerText();
      await page.screenshot({ path: path.join(outDir, `${mode}.png`), fullPage: true });
      // Log out without leaving the page: the gateway closes the socket (4401).
      await page.click('#logout-button');
      await settled(/closed/);
      out.after_logout = await state();
      await page.screenshot({ path: path.join(outDir, `${mode}-after-logout.png`), fullPage: true });
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(1); });
