// Entry point of the dashboard bundle: each server-rendered page names itself in
// `<body data-page>`, and the matching module takes it from there.
import "@xterm/xterm/css/xterm.css";
import { containersPage } from "./pages/containers.ts";
import { launchPage } from "./pages/launch.ts";
import { containerPage } from "./pages/container.ts";
import { imagesPage } from "./pages/images.ts";
import { terminalPage } from "./terminal/page.ts";
import { loginPage } from "./pages/login.ts";
import { describeHealth, parseHealth } from "./health.ts";

const pages: Record<string, () => void> = {
  containers: containersPage,
  launch: launchPage,
  container: containerPage,
  images: imagesPage,
  terminal: terminalPage,
  login: loginPage,
};

pages[document.body.dataset["page"] ?? ""]?.();

/** The server and engine state in the top bar's tooltip and dot (every signed-in page). */
async function showHealth(target: HTMLElement): Promise<void> {
  try {
    const response = await fetch("/healthz", { headers: { accept: "application/json" } });
    const health = parseHealth(await response.json());
    target.title = describeHealth(health);
    target.dataset["state"] = health.status === "ok" ? "ok" : "error";
  } catch (error) {
    target.title = `Cannot reach the Porthole server: ${(error as Error).message}`;
    target.dataset["state"] = "error";
  }
}

const health = document.getElementById("health");
if (health) void showHealth(health);
