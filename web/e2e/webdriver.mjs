// A small client of classic W3C WebDriver (HTTP + JSON, through fetch), just what the
// end-to-end tests use, for WebKitGTK's WebKitWebDriver (the engine of Safari; Debian's
// webkit2gtk-driver), which drives WebKitGTK's MiniBrowser. MiniBrowser has no headless mode:
// it draws into an Xvfb display of the test's own.

import { spawn } from "node:child_process";
import { freePort, until, WAIT } from "./support.mjs";

/** How WebDriver marks an element reference in JSON (the specification's "web element identifier"). */
const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";

/** WebDriver's code points for special keys. */
export const Keys = { Enter: "\uE007", Backspace: "\uE003" };

/** Starts `Xvfb` on a display number it picks itself; resolves to { display, stop }. */
export function startXvfb(xvfb = "Xvfb") {
  // -displayfd: Xvfb chooses a free display and writes its number to that descriptor.
  const child = spawn(xvfb, ["-displayfd", "3", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"], {
    stdio: ["ignore", "ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  return new Promise((resolvePromise, reject) => {
    let number = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`Xvfb did not report a display within ${WAIT / 1000} s: ${stderr}`));
    }, WAIT);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`Xvfb exited with ${code}: ${stderr}`));
    });
    child.stdio[3].on("data", (chunk) => {
      number += chunk;
      if (!number.includes("\n")) return;
      clearTimeout(timer);
      resolvePromise({
        display: `:${number.trim()}`,
        stop: () => stopChild(child),
      });
    });
  });
}

/** SIGTERM, then SIGKILL after 5 s; resolves when the process is gone. */
function stopChild(child) {
  return new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) return r();
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.on("exit", () => {
      clearTimeout(timer);
      r();
    });
    child.kill("SIGTERM");
  });
}

/** An error the remote end answered with (its WebDriver error code is `code`). */
export class WebDriverError extends Error {
  constructor(what, status, value) {
    super(`${what}: ${status} ${value?.error ?? ""}: ${value?.message ?? JSON.stringify(value)}`);
    this.code = value?.error;
  }
}

/**
 * One WebKitWebDriver process and one session in it (a browser window of its own: a second
 * person is a second `WebDriverBrowser`, with its own cookies).
 */
export class WebDriverBrowser {
  static async launch({ driver, binary, args = [], display, log }) {
    const port = await freePort();
    const child = spawn(driver, [`--port=${port}`], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, DISPLAY: display },
    });
    const browser = new WebDriverBrowser(child, `http://127.0.0.1:${port}`);
    for (const stream of [child.stdout, child.stderr]) stream.on("data", (chunk) => log?.(String(chunk)));
    try {
      await until(async () => {
        if (child.exitCode !== null) throw new Error(`${driver} exited with ${child.exitCode}`);
        try {
          return (await browser.command("GET", "/status")).ready;
        } catch (error) {
          if (error instanceof WebDriverError) throw error;
          return false;
        }
      }, `${driver} to answer on port ${port}`);
      const session = await browser.command("POST", "/session", {
        capabilities: { alwaysMatch: { "webkitgtk:browserOptions": { binary, args: ["--automation", ...args] } } },
      });
      browser.session = `/session/${session.sessionId}`;
      browser.capabilities = session.capabilities;
      await browser.command("POST", `${browser.session}/timeouts`, { script: WAIT, pageLoad: WAIT * 3, implicit: 0 });
    } catch (error) {
      await stopChild(child);
      throw error;
    }
    return browser;
  }

  constructor(child, base) {
    this.child = child;
    this.base = base;
    this.session = null;
  }

  async command(method, path, body) {
    const signal = AbortSignal.timeout(WAIT * 4);
    const response = await fetch(this.base + path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json; charset=utf-8" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    const text = await response.text();
    let value;
    try {
      value = JSON.parse(text).value;
    } catch {
      throw new WebDriverError(`${method} ${path}`, response.status, { message: text });
    }
    if (!response.ok) throw new WebDriverError(`${method} ${path}`, response.status, value);
    return value;
  }

  /** A command on this browser's session. */
  run(method, path, body) {
    return this.command(method, `${this.session}${path}`, body);
  }

  goto(url) {
    return this.run("POST", "/url", { url });
  }

  url() {
    return this.run("GET", "/url");
  }

  /** Runs `script` (a function's source, called with `args`) in the page; returns its value. */
  execute(script, args = []) {
    return this.run("POST", "/execute/sync", { script: `return (${script}).apply(null, arguments);`, args });
  }

  /** The element reference in a value `execute` returned, or null. */
  static elementId(value) {
    if (!value || typeof value !== "object") return null;
    return value[ELEMENT] ?? null;
  }

  static reference(id) {
    return { [ELEMENT]: id };
  }

  click(id) {
    return this.run("POST", `/element/${id}/click`, {});
  }

  clear(id) {
    return this.run("POST", `/element/${id}/clear`, {});
  }

  sendKeys(id, text) {
    return this.run("POST", `/element/${id}/value`, { text });
  }

  /** Types `text` (WebDriver key values, e.g. Keys.Enter) into whatever has the focus. */
  async typeKeys(text) {
    const actions = [...text].flatMap((key) => [
      { type: "keyDown", value: key },
      { type: "keyUp", value: key },
    ]);
    await this.run("POST", "/actions", { actions: [{ type: "key", id: "keyboard", actions }] });
    await this.run("DELETE", "/actions");
  }

  setWindowRect(rect) {
    return this.run("POST", "/window/rect", rect);
  }

  /** A PNG of the viewport. */
  async screenshot() {
    return Buffer.from(await this.run("GET", "/screenshot"), "base64");
  }

  /** Ends the session (the browser quits) and stops the driver. */
  async close() {
    try {
      if (this.session) await this.command("DELETE", this.session);
    } catch {
      // The driver is stopped below all the same.
    } finally {
      this.session = null;
      await stopChild(this.child);
    }
  }
}
