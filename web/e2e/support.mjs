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

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../..");
export const targetDir = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
export const binary = process.env.PORTHOLE_BIN ?? join(targetDir, "debug/porthole");
export const screenshots = process.env.PORTHOLE_SCREENSHOTS ?? join(targetDir, "e2e-screenshots");

/** No single wait may take longer. */
export const WAIT = 20_000;

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

