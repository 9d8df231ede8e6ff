// The dashboard in the other browser engines it must work in: Firefox (Debian's firefox-esr,
// headless, driven over WebDriver BiDi by puppeteer-core) and WebKit, Safari's engine (Debian's
// WebKitGTK: WebKitWebDriver driving MiniBrowser in an Xvfb display, through the small
// WebDriver client in webdriver.mjs). Chromium has the full walk-through in dashboard.test.mjs;
// here each engine gets its own real `porthole serve` and the same smoke flow: log in, the
// containers page, launch from the form, type in the terminal, a viewer link opened by a second
// person, a phone watching the viewer link (Firefox set up as a touch screen; in WebKit a
// phone-sized window), the logs tab. Uncaught errors, console errors and Content Security Policy
// violations fail the engine's last test: Firefox reports them from the first line of a page on
// (puppeteer's events and a preload script); classic WebDriver has neither, so in WebKit hooks go
// into each page with the first script the test runs there, and the first moments of a page's
// load go unwatched. Screenshots go to $PORTHOLE_SCREENSHOTS with the engine's name in front;
// those of a terminal are checked for light bars across it.
//
// A browser that is not installed skips its tests, except under CI or with
// PORTHOLE_REQUIRE_BROWSERS=1, where it fails them.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { WAIT, checkPrerequisites, decodePng, longestLightRun, screenshots, skipUnless, startServer, stopServer, until } from "./support.mjs";
import { Keys, WebDriverBrowser, WebDriverError, startXvfb } from "./webdriver.mjs";

const firefoxPath = process.env.PORTHOLE_FIREFOX ?? "/usr/bin/firefox-esr";
const webkitDriverPath = process.env.PORTHOLE_WEBKIT_DRIVER ?? "/usr/bin/WebKitWebDriver";
const miniBrowserPath =
  process.env.PORTHOLE_MINIBROWSER ??
  ["x86_64-linux-gnu", "aarch64-linux-gnu"].map((triple) => `/usr/lib/${triple}/webkit2gtk-4.1/MiniBrowser`).find(existsSync) ??
  "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";
const xvfbPath = process.env.PORTHOLE_XVFB ?? "/usr/bin/Xvfb";

/**
 * Runs in the page: records what must never happen there into `window.__portholeProblems`.
 * `everything`: uncaught errors, unhandled rejections and console.error too (for a driver that
 * reports none of them itself); CSP violations always (no driver here reports those).
 */
function installProblemHooks(everything) {
  if (window.__portholeProblems) return;
  const problems = (window.__portholeProblems = []);
  document.addEventListener("securitypolicyviolation", (event) =>
    problems.push(`Content Security Policy: ${event.violatedDirective} blocked ${event.blockedURI || "inline code"} (${event.sourceFile}:${event.lineNumber})`),
  );
  if (!everything) return;
  window.addEventListener("error", (event) => problems.push(`uncaught ${event.message} (${event.filename}:${event.lineno})`));
  window.addEventListener("unhandledrejection", (event) => problems.push(`unhandled rejection: ${event.reason}`));
  const consoleError = console.error;
  console.error = (...args) => {
    problems.push(`console.error: ${args.map(String).join(" ")}`);
    consoleError.apply(console, args);
  };
}

/** Runs in the page: the first element matching `selector` (and containing `text`), or null. */
function findElement(selector, text) {
  const shown = (element) => (element.checkVisibility ? element.checkVisibility() : element.getClientRects().length > 0);
  for (const element of document.querySelectorAll(selector)) {
    if (text !== null && !(element.textContent ?? "").includes(text)) continue;
    if (shown(element)) return element;
  }
  return null;
}

/** Runs in the page: resolves once what the page shows now is drawn (before a screenshot). */
function drawn() {
  return new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))));
}

/**
 * The source of a call of `fn(...args)` in the page, with `findElement` in scope (`args` travel
 * as JSON).
 */
function pageCall(fn, args) {
  return `(() => { const findElement = ${findElement}; return (${fn}).apply(null, ${JSON.stringify(args)}); })()`;
}

/** One person's browser tab, the same to the flow whichever engine and driver is behind it. */
class PuppeteerTab {
  static async open(context, who, problems, viewport) {
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    page.setDefaultNavigationTimeout(WAIT);
    page.on("pageerror", (error) => problems.push(`${who}: uncaught ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`${who}: console error: ${message.text()}`);
    });
    await page.evaluateOnNewDocument(installProblemHooks, false);
    if (viewport) await page.setViewport(viewport);
    return new PuppeteerTab(page, who, problems);
  }

  constructor(page, who, problems) {
    this.page = page;
    this.who = who;
    this.problems = problems;
  }

  async goto(url) {
    await this.harvest();
    await this.page.goto(url);
  }

  url() {
    // What the document says: puppeteer's own record of the address follows a navigation
    // that a form submission started only seconds later in Firefox.
    return this.page.evaluate(() => location.href);
  }

  evaluate(fn, ...args) {
    return this.page.evaluate(pageCall(fn, args));
  }

  /** Collects what the in-page hooks recorded. */
  async harvest() {
    try {
      const found = await this.page.evaluate(() => window.__portholeProblems?.splice(0) ?? []);
      for (const problem of found) this.problems.push(`${this.who}: ${problem}`);
    } catch {
      // A page in the middle of navigating: the next harvest collects it.
    }
  }

  async click(selector, text = null) {
    const handle = await waitForElement(this, selector, text);
    await handle.click();
    await handle.dispose();
  }

  async fill(selector, value) {
    const handle = await waitForElement(this, selector, null);
    await handle.evaluate((input) => (input.value = ""));
    await handle.type(value);
    await handle.dispose();
  }

  async select(selector, value) {
    const handle = await waitForElement(this, selector, null);
    await handle.select(value);
    await handle.dispose();
  }

  async typeInTerminal(text) {
    await this.click(".term-screen");
    await this.page.keyboard.type(text, { delay: 5 });
    await this.page.keyboard.press("Enter");
  }

  /** The element handle (or null) for `findElement(selector, text)`. */
  async find(selector, text) {
    const handle = await this.page.evaluateHandle(findElement, selector, text);
    const element = handle.asElement();
    if (!element) await handle.dispose();
    return element;
  }

  async screenshot(name) {
    await this.evaluate(drawn);
    return Buffer.from(await this.page.screenshot({ path: join(screenshots, `${name}.png`) }));
  }

  async close() {
    await this.harvest();
    await this.page.close();
  }
}

class WebDriverTab {
  constructor(browser, who, problems) {
    this.browser = browser;
    this.who = who;
    this.problems = problems;
  }

  async goto(url) {
    await this.harvest();
    await this.browser.goto(url);
  }

  url() {
    return this.browser.url();
  }

  /** Runs `fn` in the page after making sure the problem hooks are in, and collects their finds. */
  async evaluate(fn, ...args) {
    const script = `async function () {
      (${installProblemHooks})(true);
      const value = await ${pageCall(fn, args)};
      return { value, problems: window.__portholeProblems.splice(0) };
    }`;
    const { value, problems } = await this.browser.execute(script);
    for (const problem of problems) this.problems.push(`${this.who}: ${problem}`);
    return value;
  }

  async harvest() {
    try {
      await this.evaluate(() => null);
    } catch {
      // A page in the middle of navigating: nothing to collect yet.
    }
  }

  async find(selector, text) {
    return WebDriverBrowser.elementId(await this.evaluate(findElement, selector, text));
  }

  async click(selector, text = null) {
    await this.browser.click(await waitForElement(this, selector, text));
  }

  async fill(selector, value) {
    const id = await waitForElement(this, selector, null);
    await this.browser.clear(id);
    await this.browser.sendKeys(id, value);
  }

  async select(selector, value) {
    await waitForElement(this, selector, null);
    // WebDriver selects an option by clicking it.
    const option = await this.evaluate((s, v) => [...document.querySelector(s).options].find((o) => o.value === v), selector, value);
    await this.browser.click(WebDriverBrowser.elementId(option));
  }

  async typeInTerminal(text) {
    await this.click(".term-screen");
    await this.browser.typeKeys(text + Keys.Enter);
  }

  async screenshot(name) {
    await this.evaluate(drawn);
    const png = await this.browser.screenshot();
    writeFileSync(join(screenshots, `${name}.png`), png);
    return png;
  }

  async close() {
    await this.harvest();
  }
}

/** Errors of a page that is between two documents: the next try sees the new one. */
function transient(error) {
  const message = String(error?.message);
  if (error instanceof WebDriverError) return error.code !== "javascript error" || /navigat|unload|document/i.test(message);
  return /navigat|context|detached|destroyed/i.test(message);
}

/** Waits for a shown element matching `selector` (and containing `text`); returns the tab's handle to it. */
function waitForElement(tab, selector, text) {
  let failure = "";
  return until(
    async () => {
      try {
        return await tab.find(selector, text);
      } catch (error) {
        if (!transient(error)) throw error;
        failure = ` (last error: ${error.message})`;
        return null;
      }
    },
    () => `${tab.who}: ${selector}${text === null ? "" : ` with ${JSON.stringify(text)}`} to be shown${failure}`,
  );
}

/** Waits (at most `timeout` ms) until `fn(...args)`, run in the page, returns something truthy; returns that. */
function waitInPageFor(timeout, tab, what, fn, ...args) {
  let failure = "";
  return until(
    async () => {
      try {
        return await tab.evaluate(fn, ...args);
      } catch (error) {
        if (!transient(error)) throw error;
        failure = ` (last error: ${error.message})`;
        return null;
      }
    },
    () => `${tab.who}: ${what}${failure}`,
    timeout,
  );
}

function waitInPage(tab, what, fn, ...args) {
  return waitInPageFor(WAIT, tab, what, fn, ...args);
}

function waitShown(tab, selector, text = null, timeout = WAIT) {
  return waitInPageFor(timeout, tab, `${selector}${text === null ? "" : ` with ${JSON.stringify(text)}`} to be shown`, (s, t) => findElement(s, t) !== null, selector, text);
}

function waitGone(tab, selector, text = null) {
  return waitInPage(tab, `${selector} to be gone`, (s, t) => findElement(s, t) === null, selector, text);
}

async function waitForUrl(tab, pattern) {
  let url = "";
  await until(
    async () => {
      try {
        url = await tab.url();
      } catch (error) {
        if (!transient(error)) throw error;
      }
      return pattern.test(url);
    },
    () => `${tab.who}: an address matching ${pattern} (at ${url})`,
  );
  return url;
}

/** The text on the page's (first) terminal screen. */
function screen(tab) {
  return tab.evaluate(() => window.portholeTerminals?.[0]?.screenText() ?? "");
}

async function waitForScreen(tab, text) {
  try {
    await waitInPage(tab, `the terminal to show ${JSON.stringify(text)}`, (wanted) => (window.portholeTerminals?.[0]?.screenText() ?? "").includes(wanted), text);
  } catch (error) {
    throw new Error(`${error.message}; it shows:\n${await screen(tab).catch(() => "(unreadable)")}`);
  }
}

/**
 * Takes the screenshot `name` of a terminal page and checks the picture: no light bar across the
 * dark terminal (a browser's light scrollbars were one; text and the cursor make none this long).
 */
async function terminalShot(tab, name) {
  const png = await tab.screenshot(name);
  const { box, ratio } = await tab.evaluate(() => {
    const r = document.querySelector(".term-screen").getBoundingClientRect();
    return { box: { left: r.left, top: r.top, right: r.right, bottom: r.bottom }, ratio: window.devicePixelRatio };
  });
  const scaled = Object.fromEntries(Object.entries(box).map(([side, value]) => [side, value * ratio]));
  const run = longestLightRun(decodePng(png), scaled);
  assert.ok(run < 32 * ratio, `${name}: a light bar ${run} pixels long across the terminal (see ${join(screenshots, `${name}.png`)})`);
}

/**
 * The smoke flow, the same in every engine. `engine.start()` opens the owner's tab;
 * `engine.guest()` a second person's (no login cookie); `engine.phone()` a phone's (with a touch
 * screen if `engine.phoneHasTouch`, `engine.phoneWidth` wide); `engine.stop()` closes the
 * browsers.
 */
function smokeFlow(engine) {
  const name = engine.name;
  const problems = [];
  let server;
  let owner;
  let shareUrl;

  // Here only when the browser is installed or required (see `skipUnless`): missing, it fails.
  const missing = engine.needs.filter(([path]) => !existsSync(path));
  if (missing.length > 0) {
    test(`${name}: the browser is installed`, () => {
      assert.fail(missing.map(([path, what]) => `${what} is not installed (${path}): run scripts/install-deps.sh`).join("; "));
    });
    return;
  }

  before(async () => {
    checkPrerequisites();
    server = await startServer();
    owner = await engine.start(problems);
  });

  after(async () => {
    try {
      await owner?.close();
      await engine.stop();
    } finally {
      await stopServer(server);
    }
  });

  test(`${name}: logging in with the token shows the containers page`, async () => {
    await owner.goto(`${server.base}/`);
    await waitForUrl(owner, /\/login$/);
    await owner.fill("#login-token", server.token);
    await owner.click("#login-submit");
    await waitForUrl(owner, new RegExp(`^${server.base}/$`));
    // The event stream connects at once (Firefox once waited for the 15 s keep-alive).
    await waitShown(owner, "#live-state[data-state=ok]", null, 5000);
    await waitShown(owner, "#container-rows tr.empty", "No containers yet");
    await owner.screenshot(`${name}-01-containers-empty`);
  });

  test(`${name}: launching from the form opens a terminal where commands run`, async () => {
    await owner.click("a.button.primary[href='/launch']");
    await waitForUrl(owner, /\/launch$/);
    await waitInPage(owner, "the image field to be filled in", () => document.querySelector("input[name=image]")?.value === "busybox:latest");
    await owner.fill("input[name=name]", `${name}-shell`);
    await owner.click("#launch-submit");
    await waitForUrl(owner, /\/terminals\/[^/?]+$/);
    await waitShown(owner, "[data-testid=terminal-status]", "Connected");
    await waitShown(owner, ".person.role-owner .me");
    await owner.typeInTerminal("echo hello-$((6*7))");
    await waitForScreen(owner, "hello-42");
    await terminalShot(owner, `${name}-02-terminal-owner`);
  });

  test(`${name}: a viewer link opened by a second person shows the same screen and the viewer banner`, async () => {
    await owner.click("button", "Share…");
    await owner.select("dialog.share select[name=role]", "viewer");
    await owner.click("dialog.share [data-testid=create-link]");
    await waitShown(owner, "dialog.share .status[data-state=ok]", "viewer link was created");
    shareUrl = await owner.evaluate(() => document.querySelector("dialog.share [data-testid=share-url]").value);
    assert.match(shareUrl, new RegExp(`^${server.base}/terminals/[^/?]+\\?link=phl_`));
    await owner.click("dialog.share button", "Close");
    await waitGone(owner, "dialog.share");

    const guest = await engine.guest(problems);
    try {
      await guest.goto(shareUrl);
      await waitForScreen(guest, "hello-42");
      await waitShown(guest, "[data-testid=terminal-banner]", "You are a viewer");
      assert.equal(await guest.evaluate(() => document.querySelectorAll("nav").length), 0, "a guest sees no navigation");
      await waitShown(owner, ".person[data-role=viewer]", "guest");
      // What the owner types next reaches the viewer live.
      await owner.typeInTerminal("echo live-$((2+3))");
      await waitForScreen(guest, "live-5");
      await terminalShot(guest, `${name}-03-terminal-viewer`);
    } finally {
      await guest.close();
    }
  });

  if (engine.phone) {
    const touch = engine.phoneHasTouch;
    test(`${name}: on a ${touch ? "phone" : "phone-sized window"} the viewer link shows the whole screen, readable, with the special keys`, async () => {
      const phone = await engine.phone(problems);
      try {
        await phone.goto(shareUrl);
        await waitForScreen(phone, "hello-42");
        await waitShown(phone, "[data-testid=terminal-banner]", "You are a viewer");
        // A touch screen shows the special keys by itself; elsewhere the Keys button does.
        if (!touch) await phone.click(".term-toolbar button", "Keys");
        await waitShown(phone, ".key-row button[data-key=Esc]");
        await waitShown(phone, ".key-row button[data-key=Ctrl]");
        const layout = await phone.evaluate(() => {
          const rect = (selector) => {
            const r = document.querySelector(selector).getBoundingClientRect();
            return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height };
          };
          const view = window.portholeTerminals[0];
          return {
            width: window.innerWidth,
            height: window.innerHeight,
            pageWidth: document.documentElement.scrollWidth,
            coarse: matchMedia("(pointer: coarse)").matches,
            renderer: document.querySelector(".terminal-view").dataset.renderer,
            fontSize: view.term.options.fontSize,
            screen: rect(".term-screen"),
            keys: rect(".key-row"),
          };
        });
        assert.equal(layout.coarse, touch, `the browser reports ${layout.coarse ? "a" : "no"} touch screen`);
        assert.ok(Math.abs(layout.width - engine.phoneWidth) <= 2, `the viewport is ${layout.width} wide, not ${engine.phoneWidth}`);
        assert.ok(layout.pageWidth <= layout.width, `the page is wider than the screen (${layout.pageWidth} > ${layout.width}) and scrolls sideways`);
        if (touch) assert.equal(layout.renderer, "dom", "touch screens draw with the DOM renderer");
        assert.ok(layout.fontSize < 14 && layout.fontSize >= 7, `the owner's wide screen is not shown smaller but readable (font ${layout.fontSize})`);
        assert.ok(layout.screen.width > 300 && layout.screen.height > 150, `the terminal is not shown large enough: ${JSON.stringify(layout.screen)}`);
        assert.ok(layout.screen.left >= 0 && layout.screen.right <= layout.width + 1, `the terminal does not fit the screen's width: ${JSON.stringify(layout.screen)}`);
        assert.ok(layout.keys.bottom <= layout.height + 1 && layout.keys.top >= layout.screen.bottom - 1, `the special keys are not below the terminal on screen: ${JSON.stringify(layout)}`);
        await terminalShot(phone, `${name}-04-phone-viewer`);
      } finally {
        await phone.close();
      }
    });
  }

  test(`${name}: the logs tab shows a line the container printed`, async () => {
    await owner.goto(`${server.base}/launch`);
    await waitInPage(owner, "the image field to be filled in", () => document.querySelector("input[name=image]")?.value === "busybox:latest");
    await owner.fill("input[name=name]", `${name}-ticker`);
    await owner.fill("input[name=command]", `sh -c 'i=0; while true; do echo ${name}-tick-$i; i=$((i+1)); sleep 0.3; done'`);
    for (const box of ["tty", "interactive"]) {
      if (await owner.evaluate((n) => document.querySelector(`input[name=${n}]`).checked, box)) await owner.click(`input[name=${box}]`);
    }
    await owner.click("#launch-submit");
    await waitForUrl(owner, /\/containers\/[^/]+#logs$/);
    await waitShown(owner, "[data-testid=log-output] .line[data-stream=stdout]", `${name}-tick-1`);
    // Live: lines keep arriving on the open page.
    await waitShown(owner, "[data-testid=log-output] .line", `${name}-tick-6`);
    await owner.screenshot(`${name}-05-container-logs`);
  });

  test(`${name}: the containers page lists both containers, running`, async () => {
    await owner.goto(`${server.base}/`);
    await waitShown(owner, `#container-rows tr[data-name=${name}-shell][data-status=running]`);
    await waitShown(owner, `#container-rows tr[data-name=${name}-ticker][data-status=running]`);
    await owner.screenshot(`${name}-06-containers`);
  });

  test(`${name}: no page had an uncaught error, a console error or a Content Security Policy violation`, async () => {
    await owner.harvest();
    assert.deepEqual(problems, []);
  });
}

// ---- Firefox: firefox-esr over WebDriver BiDi (built into Firefox; no geckodriver) ----

/** Firefox preferences that make it a touch screen, as a phone's browser is. */
const PHONE_PREFS = {
  // Pointer capabilities: 1 = coarse, without fine (2) or hover (4).
  "ui.primaryPointerCapabilities": 1,
  "ui.allPointerCapabilities": 1,
  "dom.w3c_touch_events.enabled": 1,
};

function launchFirefox(prefs = {}) {
  return puppeteer.launch({
    browser: "firefox",
    executablePath: firefoxPath,
    headless: true,
    protocolTimeout: WAIT * 3,
    timeout: WAIT * 3,
    extraPrefsFirefox: prefs,
  });
}

describe("Firefox", { skip: skipUnless(firefoxPath, "Firefox (firefox-esr)") }, () => {
  let firefox;
  let phoneFirefox;
  const contexts = [];
  smokeFlow({
    name: "firefox",
    needs: [[firefoxPath, "Firefox (firefox-esr)"]],
    async start(problems) {
      firefox = await launchFirefox();
      return PuppeteerTab.open(firefox.defaultBrowserContext(), "owner", problems, { width: 1280, height: 800 });
    },
    async guest(problems) {
      // A different person: a context of its own, without the login cookie.
      const context = await firefox.createBrowserContext();
      contexts.push(context);
      return PuppeteerTab.open(context, "guest", problems, { width: 1000, height: 700 });
    },
    phoneHasTouch: true,
    phoneWidth: 390,
    async phone(problems) {
      phoneFirefox = await launchFirefox(PHONE_PREFS);
      return PuppeteerTab.open(phoneFirefox.defaultBrowserContext(), "phone", problems, { width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    },
    async stop() {
      for (const context of contexts) await context.close().catch(() => {});
      await phoneFirefox?.close();
      await firefox?.close();
    },
  });
});

// ---- WebKit: WebKitGTK's MiniBrowser through WebKitWebDriver, in Xvfb ----

describe("WebKit", { skip: skipUnless(webkitDriverPath, "WebKitWebDriver (webkit2gtk-driver)") || skipUnless(xvfbPath, "Xvfb (xvfb)") }, () => {
  let xvfb;
  const browsers = [];
  const verbose = process.env.PORTHOLE_E2E_VERBOSE ? (text) => process.stderr.write(`[webkit] ${text}`) : undefined;

  async function open(who, problems, size) {
    const browser = await WebDriverBrowser.launch({ driver: webkitDriverPath, binary: miniBrowserPath, display: xvfb.display, log: verbose });
    browsers.push(browser);
    await browser.setWindowRect(size);
    const tab = new WebDriverTab(browser, who, problems);
    const close = tab.close.bind(tab);
    tab.close = async () => {
      await close();
      await browser.close();
    };
    return tab;
  }

  smokeFlow({
    name: "webkit",
    needs: [
      [webkitDriverPath, "WebKitWebDriver (webkit2gtk-driver)"],
      [miniBrowserPath, "WebKitGTK's MiniBrowser (libwebkit2gtk-4.1-0)"],
      [xvfbPath, "Xvfb (xvfb)"],
    ],
    async start(problems) {
      xvfb = await startXvfb(xvfbPath);
      return open("owner", problems, { width: 1280, height: 800 });
    },
    // A different person: a browser process of its own, without the login cookie.
    guest: (problems) => open("guest", problems, { width: 1000, height: 700 }),
    // WebKitGTK emulates no touch screen, and MiniBrowser's window is at least 447 pixels wide
    // (its toolbar): a phone-sized window, with the special keys from the Keys button.
    phoneHasTouch: false,
    phoneWidth: 447,
    phone: (problems) => open("phone", problems, { width: 390, height: 844 }),
    async stop() {
      for (const browser of browsers) await browser.close();
      await xvfb?.stop();
    },
  });
});
