// What the end-to-end tests share: where the binary and the screenshots are, the bound on every
// wait, and a real `porthole serve` of the test's own (native engine, temporary data directory,
// random port) with the login token it printed.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { inflateSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../..");
export const targetDir = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
export const binary = process.env.PORTHOLE_BIN ?? join(targetDir, "debug/porthole");
export const screenshots = process.env.PORTHOLE_SCREENSHOTS ?? join(targetDir, "e2e-screenshots");

/** No single wait may take longer. */
export const WAIT = 20_000;

/**
 * Under CI (or with PORTHOLE_REQUIRE_BROWSERS=1) a browser that is not installed fails its
 * tests; elsewhere they are skipped with the reason.
 */
export const browsersRequired = Boolean(process.env.CI) || process.env.PORTHOLE_REQUIRE_BROWSERS === "1";

/** The `skip` option for tests that need `path`: false when it is there or required. */
export function skipUnless(path, what) {
  if (existsSync(path) || browsersRequired) return false;
  return `${what} is not installed (${path}): run scripts/install-deps.sh`;
}

/** Checks what every end-to-end test needs before it starts anything. */
export function checkPrerequisites() {
  assert.ok(existsSync(binary), `no porthole binary at ${binary}: build it first (cargo build)`);
  assert.ok(existsSync(join(repo, "static/app.js")), "static/app.js is missing: run npm run build in web/");
  mkdirSync(screenshots, { recursive: true });
}

/**
 * Starts `porthole serve` on a random port with a fresh data directory and waits for the
 * address and the login link it prints. Resolves to { child, base, token, dataDir }.
 */
export function startServer() {
  const dataDir = mkdtempSync(join(tmpdir(), "ph-e2e-"));
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return new Promise((resolvePromise, reject) => {
    let base;
    let token;
    const timer = setTimeout(() => reject(new Error("porthole did not report its address and login link within 60 s")), 60_000);
    child.on("exit", (code) => reject(new Error(`porthole exited early with ${code}`)));
    createInterface({ input: child.stderr }).on("line", (line) => {
      if (process.env.PORTHOLE_E2E_VERBOSE) console.error(line);
      const listening = line.split("listening on ")[1];
      if (listening) base = listening.trim().replace(/\/$/, "");
      const login = line.split("/login?token=")[1];
      if (login) token = login.trim();
      if (base && token) {
        clearTimeout(timer);
        resolvePromise({ child, base, token, dataDir });
      }
    });
  });
}

/** Removes whatever containers the tests left (a failed test may leave some running). */
export async function removeAllContainers(server) {
  const headers = { authorization: `Bearer ${server.token}` };
  const response = await fetch(`${server.base}/api/containers?all=true`, { headers });
  for (const container of await response.json()) {
    await fetch(`${server.base}/api/containers/${container.id}?force=true`, { method: "DELETE", headers });
  }
}

/** Removes the server's containers, stops it (SIGKILL after 15 s) and deletes its data. */
export async function stopServer(server) {
  if (!server) return;
  try {
    await removeAllContainers(server);
  } finally {
    server.child.kill("SIGTERM");
    await new Promise((r) => {
      if (server.child.exitCode !== null || server.child.signalCode !== null) return r();
      const timer = setTimeout(() => {
        server.child.kill("SIGKILL");
        r();
      }, 15_000);
      server.child.on("exit", () => {
        clearTimeout(timer);
        r();
      });
    });
    rmSync(server.dataDir, { recursive: true, force: true });
  }
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/** Waits until `check()` returns something truthy (polled every 100 ms), at most `timeout` ms. */
export async function until(check, describe, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`waited ${timeout / 1000} s for ${typeof describe === "function" ? await describe() : describe}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Decodes a PNG (8 bits per channel, RGB or RGBA, not interlaced: what browsers' screenshots
 * are) into { width, height, channels, pixels }.
 */
export function decodePng(png) {
  assert.equal(png.readUInt32BE(0), 0x89504e47, "not a PNG");
  let offset = 8;
  let header;
  const data = [];
  while (offset < png.length) {
    const length = png.readUInt32BE(offset);
    const type = png.toString("latin1", offset + 4, offset + 8);
    const body = png.subarray(offset + 8, offset + 8 + length);
    if (type === "IHDR") header = { width: body.readUInt32BE(0), height: body.readUInt32BE(4), depth: body[8], color: body[9], interlace: body[12] };
    if (type === "IDAT") data.push(body);
    offset += 12 + length;
  }
  assert.ok(header && header.depth === 8 && (header.color === 2 || header.color === 6) && header.interlace === 0, `an unsupported PNG: ${JSON.stringify(header)}`);
  const channels = header.color === 6 ? 4 : 3;
  const raw = inflateSync(Buffer.concat(data));
  const stride = header.width * channels;
  const pixels = Buffer.alloc(stride * header.height);
  for (let y = 0; y < header.height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const left = x >= channels ? pixels[y * stride + x - channels] : 0;
      const up = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const upLeft = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0;
      let predictor = 0;
      if (filter === 1) predictor = left;
      else if (filter === 2) predictor = up;
      else if (filter === 3) predictor = (left + up) >> 1;
      else if (filter === 4) {
        const p = left + up - upLeft;
        const [pa, pb, pc] = [Math.abs(p - left), Math.abs(p - up), Math.abs(p - upLeft)];
        predictor = pa <= pb && pa <= pc ? left : pb <= pc ? up : upLeft;
      }
      pixels[y * stride + x] = (line[x] + predictor) & 0xff;
    }
  }
  return { width: header.width, height: header.height, channels, pixels };
}

/**
 * The longest straight run (in a row or a column) of light pixels (each channel above 200)
 * inside `box` ({ left, top, right, bottom } in image pixels). Text never makes a long one; a
 * light bar (say, a scrollbar drawn in a light theme over a dark terminal) does.
 */
export function longestLightRun(image, box) {
  const light = (x, y) => {
    const at = (y * image.width + x) * image.channels;
    return image.pixels[at] > 200 && image.pixels[at + 1] > 200 && image.pixels[at + 2] > 200;
  };
  const left = Math.max(0, Math.floor(box.left));
  const top = Math.max(0, Math.floor(box.top));
  const right = Math.min(image.width, Math.ceil(box.right));
  const bottom = Math.min(image.height, Math.ceil(box.bottom));
  let longest = 0;
  for (let y = top; y < bottom; y++) {
    let run = 0;
    for (let x = left; x < right; x++) longest = Math.max(longest, (run = light(x, y) ? run + 1 : 0));
  }
  for (let x = left; x < right; x++) {
    let run = 0;
    for (let y = top; y < bottom; y++) longest = Math.max(longest, (run = light(x, y) ? run + 1 : 0));
  }
  return longest;
}
