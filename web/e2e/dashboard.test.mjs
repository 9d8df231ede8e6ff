// End-to-end tests of the dashboard: a real `porthole serve` (native engine, temporary data
// directory, random port) driven through headless Chromium (Debian's /usr/bin/chromium, by
// playwright-core; no browser is downloaded). Run as root by scripts/test.sh after the Rust
// build; PORTHOLE_BIN names the binary. Screenshots of the main pages go to
// $PORTHOLE_SCREENSHOTS (default target/e2e-screenshots/) for a reviewer to look at.
//
// The tests run in order and share one server, one signed-in browser context (the owner) and
// the containers they launch, like a person working through the dashboard would.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { WAIT, checkPrerequisites, freePort, screenshots, startServer, stopServer } from "./support.mjs";

const chromiumPath = process.env.PORTHOLE_CHROMIUM ?? "/usr/bin/chromium";

let server;
let browser;
let owner;
let ownerPage;
let guest;
let guestPage;
const problems = [];

/** Collects what must never happen on a page: uncaught errors and CSP violations. */
function watch(page, who) {
  page.on("pageerror", (error) => problems.push(`${who}: uncaught ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy|Refused to/i.test(message.text())) problems.push(`${who}: ${message.text()}`);
  });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: false });
}

/** The text on the page's (first) terminal screen. */
function screen(page) {
  return page.evaluate(() => window.portholeTerminals?.[0]?.screenText() ?? "");
}

async function waitForScreen(page, text) {
  try {
    await page.waitForFunction((wanted) => (window.portholeTerminals?.[0]?.screenText() ?? "").includes(wanted), text, { timeout: WAIT, polling: 100 });
  } catch (error) {
    throw new Error(`the terminal never showed ${JSON.stringify(text)}; it shows:\n${await screen(page)}\n(${error.message})`);
  }
}

async function typeInTerminal(page, text) {
  await page.locator(".term-screen").first().click();
  await page.keyboard.type(text, { delay: 5 });
  await page.keyboard.press("Enter");
}

before(async () => {
  checkPrerequisites();
  assert.ok(existsSync(chromiumPath), `no Chromium at ${chromiumPath}: run scripts/install-deps.sh`);
  server = await startServer();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    // Root in CI has no user namespaces for Chromium's sandbox.
    args: ["--no-sandbox", "--enable-unsafe-swiftshader"],
  });
  owner = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  owner.setDefaultTimeout(WAIT);
  ownerPage = watch(await owner.newPage(), "owner");
});

after(async () => {
  try {
    await browser?.close();
    await stopServer(server);
  } finally {
    if (registry) {
      registry.child.kill("SIGTERM");
      rmSync(registry.dir, { recursive: true, force: true });
    }
  }
});

test("the login page refuses a wrong token in words and lets the right one in", async () => {
  await ownerPage.goto(`${server.base}/`);
  assert.match(ownerPage.url(), /\/login$/);
  await shot(ownerPage, "01-login");
  await ownerPage.fill("#login-token", "ph_not-a-real-token");
  await ownerPage.click("#login-submit");
  await ownerPage.getByRole("alert").filter({ hasText: "That token is not valid" }).waitFor();
  await ownerPage.fill("#login-token", server.token);
  await ownerPage.click("#login-submit");
  await ownerPage.waitForURL(`${server.base}/`);
  await ownerPage.locator("#live-state[data-state=ok]").waitFor();
  await ownerPage.locator("#container-rows tr.empty", { hasText: "No containers yet" }).waitFor();
});

test("launching from the form opens the container's terminal, where commands run", async () => {
  await ownerPage.click("a.button.primary[href='/launch']");
  await ownerPage.waitForURL(/\/launch$/);
  await ownerPage.locator("#image-choices option[value='busybox:latest']").waitFor({ state: "attached" });
  assert.equal(await ownerPage.inputValue("input[name=image]"), "busybox:latest");
  assert.equal(await ownerPage.inputValue("input[name=command]"), "sh");
  await ownerPage.fill("input[name=name]", "e2e-shell");
  await shot(ownerPage, "02-launch");
  await ownerPage.click("#launch-submit");
  await ownerPage.waitForURL(/\/terminals\/[^/?]+$/);
  await ownerPage.locator("[data-testid=terminal-status]", { hasText: "Connected" }).waitFor();
  await ownerPage.locator(".person.role-owner .me").waitFor();
  await typeInTerminal(ownerPage, "echo hello-$((6*7))");
  await waitForScreen(ownerPage, "hello-42");
  await shot(ownerPage, "03-terminal-owner");
});

let shareUrl;

test("a viewer link shows the same screen, earlier output included, and the viewer cannot type", async () => {
  await ownerPage.click("button:has-text('Share…')");
  const dialog = ownerPage.locator("dialog.share");
  await dialog.locator("select[name=role]").selectOption("viewer");
  await dialog.locator("[data-testid=create-link]").click();
  await dialog.locator(".status[data-state=ok]", { hasText: "viewer link was created" }).waitFor();
  shareUrl = await dialog.locator("[data-testid=share-url]").inputValue();
  assert.match(shareUrl, new RegExp(`^${server.base}/terminals/[^/?]+\\?link=phl_`));
  await shot(ownerPage, "04-share-dialog");
  await dialog.getByRole("button", { name: "Close" }).click();

  // A different person: a fresh context without the login cookie.
  guest = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  guest.setDefaultTimeout(WAIT);
  guestPage = watch(await guest.newPage(), "guest");
  // This browser has no WebGL: the terminal must fall back to xterm's DOM renderer.
  await guestPage.addInitScript(() => {
    const getContext = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
      return String(kind).startsWith("webgl") ? null : getContext.call(this, kind, ...rest);
    };
  });
  await guestPage.goto(shareUrl);
  assert.equal(new URL(guestPage.url()).pathname, new URL(shareUrl).pathname, "the guest stays on the terminal page");
  await waitForScreen(guestPage, "hello-42");
  await guestPage.locator("[data-testid=terminal-banner]", { hasText: "You are a viewer" }).waitFor();
  assert.equal(await guestPage.locator("nav").count(), 0, "a guest sees no navigation");
  assert.equal(await guestPage.locator(".terminal-view").getAttribute("data-renderer"), "dom");
  assert.equal(await ownerPage.locator(".terminal-view").getAttribute("data-renderer"), "webgl");

  // The owner sees the guest arrive as a viewer.
  await ownerPage.locator(".person[data-role=viewer]", { hasText: "guest" }).waitFor();

  await typeInTerminal(guestPage, "echo viewer-typed");
  // Give the keystrokes every chance to travel, then check they did nothing anywhere.
  await typeInTerminal(ownerPage, "echo owner-after");
  await waitForScreen(guestPage, "owner-after");
  assert.ok(!(await screen(ownerPage)).includes("viewer-typed"), "the viewer's typing reached the shell");
  assert.ok(!(await screen(guestPage)).includes("viewer-typed"), "the viewer's typing reached the shell");
  await shot(guestPage, "05-terminal-viewer");
});

test("the guest asks to type, the owner grants it and the guest's command runs; taking it back stops it again", async () => {
  await guestPage.click("button[data-action=request-control]");
  const request = ownerPage.locator(".control-request", { hasText: "guest asks to type" });
  await request.waitFor();
  await shot(ownerPage, "05b-control-request");
  await request.locator("button[data-action=grant-request]").click();
  await guestPage.locator("[data-testid=terminal-banner]").waitFor({ state: "hidden" });
  await guestPage.locator(".person[data-role=writer]", { has: guestPage.locator(".me") }).waitFor();
  await typeInTerminal(guestPage, "echo guest-$((2+3))");
  await waitForScreen(ownerPage, "guest-5");
  await waitForScreen(guestPage, "guest-5");

  await ownerPage.locator(".person[data-role=writer] button[data-action=revoke]").click();
  await guestPage.locator("[data-testid=terminal-banner]", { hasText: "You are a viewer" }).waitFor();
  // The presence bar's own button grants too.
  await ownerPage.locator(".person[data-role=viewer] button[data-action=grant]").click();
  await guestPage.locator("[data-testid=terminal-banner]").waitFor({ state: "hidden" });
  await ownerPage.locator(".person[data-role=writer] button[data-action=revoke]").click();
  await guestPage.locator("[data-testid=terminal-banner]", { hasText: "You are a viewer" }).waitFor();
});

test("the terminal reconnects by itself after a dropped connection, keeping its screen", async () => {
  // Drop the socket as a network failure would (the server never said goodbye).
  await ownerPage.evaluate(() => window.portholeTerminals[0].socket.close());
  await ownerPage.locator("[data-testid=terminal-status]", { hasText: "Reconnected" }).waitFor();
  assert.ok((await screen(ownerPage)).includes("hello-42"), "the screen was lost on reconnect");
  await typeInTerminal(ownerPage, "echo after-reconnect-$((1+1))");
  await waitForScreen(ownerPage, "after-reconnect-2");
  const text = await screen(ownerPage);
  // Output from before the drop appears once: the resume neither lost nor repeated bytes.
  assert.equal(text.split("hello-42").length - 1, 1, `earlier output is missing or repeated after the resume:\n${text}`);
});

test("on a phone the shared screen shows smaller, with the special keys", async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  phone.setDefaultTimeout(WAIT);
  try {
    const page = watch(await phone.newPage(), "phone");
    await page.goto(shareUrl);
    await waitForScreen(page, "hello-42");
    await page.locator(".key-row button[data-key=Esc]").waitFor();
    await page.locator(".key-row button[data-key=Ctrl]").waitFor();
    assert.equal(await page.locator(".terminal-view").getAttribute("data-renderer"), "dom", "touch screens draw with the DOM renderer");
    // The owner's wide screen is shown smaller (down to a readable minimum; the rest pans).
    const fontSize = await page.evaluate(() => window.portholeTerminals[0].term.options.fontSize);
    assert.ok(fontSize < 14, `the font did not shrink for the phone (${fontSize})`);
    // Let the renderer draw the new font size before the picture is taken.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await shot(page, "11-phone-viewer");
  } finally {
    await phone.close();
  }
});

test("the logs tab shows what a container prints, live", async () => {
  await ownerPage.goto(`${server.base}/launch`);
  await ownerPage.fill("input[name=name]", "e2e-ticker");
  await ownerPage.fill("input[name=command]", "sh -c 'i=0; while true; do echo tick-$i; echo oops-$i >&2; i=$((i+1)); sleep 0.3; done'");
  await ownerPage.uncheck("input[name=tty]");
  await ownerPage.uncheck("input[name=interactive]");
  await ownerPage.click("#launch-submit");
  await ownerPage.waitForURL(/\/containers\/[^/]+#logs$/);
  const output = ownerPage.locator("[data-testid=log-output]");
  await output.locator(".line[data-stream=stdout]", { hasText: "tick-1" }).waitFor();
  // Live: lines keep arriving on the open page.
  await output.locator(".line", { hasText: "tick-8" }).waitFor();
  await output.locator(".line[data-stream=stderr]", { hasText: "oops-8" }).waitFor();
  // Search highlights; the stderr filter hides stderr lines.
  await ownerPage.fill("input[aria-label='Search the logs']", "tick-5");
  await output.locator("mark", { hasText: "tick-5" }).waitFor();
  await ownerPage.locator(".logs label.check", { hasText: "stderr" }).locator("input").uncheck();
  await output.locator(".line[data-stream=stderr]").first().waitFor({ state: "hidden" });
  await shot(ownerPage, "06-container-logs");
  // Paused, new lines wait (and are counted); resumed, they appear.
  await ownerPage.fill("input[aria-label='Search the logs']", "");
  const pause = ownerPage.locator("button[data-action=pause]");
  await pause.click();
  const shown = await output.locator(".line").count();
  await pause.filter({ hasText: /Resume \(\d+ new\)/ }).waitFor();
  assert.equal(await output.locator(".line").count(), shown, "lines were added while paused");
  await pause.click();
  await ownerPage.waitForFunction((n) => document.querySelectorAll("[data-testid=log-output] .line").length > n, shown, { timeout: WAIT });
  // The download has the whole log, with times and streams.
  const [download] = await Promise.all([ownerPage.waitForEvent("download"), ownerPage.click("button:has-text('Download')")]);
  const text = readFileSync(await download.path(), "utf8");
  assert.match(text, /^\d{4}-\d\d-\d\dT[\d:.]+Z stdout tick-0$/m);
  assert.match(text, /Z stderr oops-0$/m);

  await ownerPage.click("#tab-stats");
  await ownerPage.locator("figure.chart figcaption", { hasText: /CPU: \d/ }).waitFor();
  await shot(ownerPage, "07-container-stats");
  // A shell in the container, in a tab of the page.
  await ownerPage.click("#tab-terminals");
  await ownerPage.click("button[data-action=new-shell]");
  await ownerPage.locator(".term-tab[aria-selected=true]").waitFor();
  await ownerPage.locator("[data-testid=terminal-status]", { hasText: "Connected" }).waitFor();
  await typeInTerminal(ownerPage, "echo tab-$((3*3))");
  await waitForScreen(ownerPage, "tab-9");
  await shot(ownerPage, "07b-container-terminal-tab");

  await ownerPage.click("#tab-overview");
  await ownerPage.locator("dl.facts dd", { hasText: "tick-$i" }).waitFor();
  await shot(ownerPage, "08-container-overview");
});

test("stop and remove from the containers list, with confirmation", async () => {
  await ownerPage.goto(`${server.base}/`);
  const ticker = ownerPage.locator("#container-rows tr[data-name=e2e-ticker]");
  await ticker.waitFor();
  await ownerPage.locator("#container-rows tr[data-name=e2e-shell][data-status=running]").waitFor();
  await ownerPage.locator("#container-rows tr[data-name=e2e-shell] td.num", { hasText: /B$/ }).waitFor();
  await shot(ownerPage, "09-containers");

  await ticker.locator("button[data-action=stop]").click();
  await ownerPage.locator("#container-rows tr[data-name=e2e-ticker][data-status=exited]").waitFor();
  await ownerPage.locator("#container-rows tr[data-name=e2e-ticker] button[data-action=remove]").click();
  // Cancelling keeps it; confirming removes it.
  await ownerPage.locator("dialog.confirm button[value=cancel]").click();
  await ownerPage.locator("#container-rows tr[data-name=e2e-ticker]").waitFor();
  await ownerPage.locator("#container-rows tr[data-name=e2e-ticker] button[data-action=remove]").click();
  await ownerPage.locator("dialog.confirm button[data-confirm]").click();
  await ownerPage.locator("#container-rows tr[data-name=e2e-ticker]").waitFor({ state: "detached" });

  // The running shell: removal kills it, and its guest sees the terminal end.
  await ownerPage.locator("#container-rows tr[data-name=e2e-shell] button[data-action=remove]").click();
  await ownerPage.locator("dialog.confirm", { hasText: "running" }).locator("button[data-confirm]").click();
  await ownerPage.locator("#container-rows tr[data-name=e2e-shell]").waitFor({ state: "detached" });
  await guestPage.locator("[data-testid=terminal-banner]", { hasText: /process (has ended|exited)/ }).waitFor();
});

let registry;

/** A real `docker-registry` on 127.0.0.1 serving from a temp dir (stopped in `after`). */
async function startRegistry() {
  const dir = mkdtempSync(join(tmpdir(), "ph-e2e-registry-"));
  const port = await freePort();
  writeFileSync(
    join(dir, "config.yml"),
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const child = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: "ignore" });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await new Promise((r) => connect(port, "127.0.0.1").on("connect", function () { this.destroy(); r(true); }).on("error", () => r(false)));
    if (up) break;
    assert.ok(Date.now() < deadline && child.exitCode === null, "docker-registry did not start listening within 15 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, dir, host: `127.0.0.1:${port}` };
}

test("images: import a root filesystem, remove it, pull it back from a registry with progress", async () => {
  registry = await startRegistry();
  await ownerPage.goto(`${server.base}/images`);
  await ownerPage.locator("#image-rows .tag", { hasText: "busybox:latest" }).waitFor();
  await shot(ownerPage, "10-images");

  // Import: a root filesystem tarball, uploaded with progress, tagged.
  const work = mkdtempSync(join(tmpdir(), "ph-e2e-rootfs-"));
  try {
    mkdirSync(join(work, "root/etc"), { recursive: true });
    writeFileSync(join(work, "root/etc/hello"), `made by the dashboard test at ${new Date().toISOString()}\n`);
    execFileSync("tar", ["-C", join(work, "root"), "-cf", join(work, "rootfs.tar"), "."]);
    await ownerPage.setInputFiles("#import-file", join(work, "rootfs.tar"));
    await ownerPage.fill("#import-tag", "e2e/hello:1");
    await ownerPage.click("#import-submit");
    await ownerPage.locator("#import-status[data-state=ok]", { hasText: "Imported e2e/hello:1" }).waitFor();
    await ownerPage.locator("#image-rows .tag", { hasText: "e2e/hello:1" }).waitFor();

    // Into the registry with a real client: the archive Porthole saves, pushed by skopeo.
    const saved = await fetch(`${server.base}/api/images/save?refs=e2e/hello:1`, { headers: { authorization: `Bearer ${server.token}` } });
    assert.equal(saved.status, 200);
    writeFileSync(join(work, "saved.tar"), Buffer.from(await saved.arrayBuffer()));
    execFileSync("skopeo", ["--insecure-policy", "--command-timeout", "60s", "copy", "--dest-tls-verify=false", `docker-archive:${join(work, "saved.tar")}`, `docker://${registry.host}/e2e/hello:1`], { stdio: "pipe", timeout: 90_000 });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }

  // Remove it here (with confirmation)...
  const imported = ownerPage.locator("#image-rows tr", { has: ownerPage.locator(".tag", { hasText: "e2e/hello:1" }) });
  await imported.locator("button[data-action=remove]").click();
  await ownerPage.locator("dialog.confirm button[data-confirm]").click();
  await imported.waitFor({ state: "detached" });

  // ...and pull it back from the plain-HTTP registry, layer by layer.
  const reference = `${registry.host}/e2e/hello:1`;
  await ownerPage.fill("#pull-reference", reference);
  await ownerPage.check("#pull-insecure");
  await ownerPage.click("#pull-submit");
  await ownerPage.locator("#pull-layers li[data-phase]").first().waitFor();
  await ownerPage.locator("#pull-status[data-state=ok]", { hasText: `Pulled ${reference}` }).waitFor();
  assert.equal(await ownerPage.locator("#pull-overall").evaluate((bar) => bar.value), 1);
  assert.equal(await ownerPage.locator("#pull-layers li[data-phase=complete], #pull-layers li[data-phase=exists]").count(), await ownerPage.locator("#pull-layers li").count());
  await ownerPage.locator("#image-rows .tag", { hasText: reference }).waitFor();
  await shot(ownerPage, "12-images-pulled");

  // A pull that fails says why, where the user asked.
  await ownerPage.fill("#pull-reference", `${registry.host}/e2e/missing:1`);
  await ownerPage.click("#pull-submit");
  await ownerPage.locator("#pull-status[data-state=error]", { hasText: "Pull failed" }).waitFor();
});

test("no page had an uncaught error or a Content Security Policy violation", () => {
  assert.deepEqual(problems, []);
});
