// One browser session against a running gateway (tools/demo.sh run): headless
// Debian Chromium driven by playwright-core.  Prints one JSON line with what
// the page showed; saves screenshots into <out dir>.
// usage: node e2e.js guard|terminate <gateway base URL> <out dir>
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [mode, base, outDir] = process.argv.slice(2);
const TIMEOUT = 10000;

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
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 760 } });
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
