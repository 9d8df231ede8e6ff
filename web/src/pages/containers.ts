// The containers list (`/`): live from the event stream, with CPU and memory at a glance,
// search and a state filter, and per-row actions (removal asks first).

import { api, describeError, type ContainerSummary, type EngineStatus, type Stats } from "../api.ts";
import { busy, byId, confirmDialog, h, notify, replace } from "../dom.ts";
import { formatBytes, formatPercent, shortId } from "../format.ts";
import { cpuPercent, describeState, matchesFilter, sortContainers, type StatusFilter } from "../models/containers.ts";
import { watchEvents } from "../events.ts";

const STATS_EVERY_MS = 3000;

export function containersPage(): void {
  const body = byId<HTMLTableSectionElement>("container-rows");
  const search = byId<HTMLInputElement>("container-search");
  const filter = byId<HTMLSelectElement>("container-filter");
  const status = byId("containers-status");
  const live = byId("live-state");
  const enginesNote = byId("engines-status");
  let engines: EngineStatus[] = [];
  let containers: ContainerSummary[] = [];
  let loaded = false;
  const stats = new Map<string, { previous?: Stats; current?: Stats }>();

  search.value = new URLSearchParams(location.search).get("q") ?? "";

  /** Engines matter on screen only when there are several, or one is down. */
  async function loadEngines(): Promise<void> {
    try {
      engines = await api<EngineStatus[]>("/api/engines");
    } catch {
      engines = [];
    }
    const down = engines.filter((e) => !e.available);
    notify(enginesNote, down.map((e) => `Engine ${e.name} is unavailable${e.error ? `: ${e.error}` : ""}; its containers are shown as last known.`).join(" "));
  }

  async function load(): Promise<void> {
    try {
      containers = await api<ContainerSummary[]>("/api/containers?all=true");
      loaded = true;
      notify(status, "");
      render();
    } catch (error) {
      notify(status, `Cannot list the containers: ${describeError(error)}`);
    }
  }

  function render(): void {
    const now = Date.now();
    const visible = sortContainers(containers).filter((c) => matchesFilter(c, search.value, filter.value as StatusFilter));
    if (!loaded) return;
    if (visible.length === 0) {
      const empty = containers.length === 0 ? h("td", { colspan: 7 }, "No containers yet. ", h("a", { href: "/launch" }, "Launch one"), " — one click runs a shell.") : h("td", { colspan: 7 }, "No container matches the search.");
      replace(body, h("tr", { class: "empty" }, empty));
      return;
    }
    // Rows whose content did not change are kept (so a button being clicked is not swapped
    // under the pointer); changed ones are rebuilt; order follows the sort.
    const existing = new Map<string, HTMLTableRowElement>();
    for (const tr of body.querySelectorAll<HTMLTableRowElement>("tr[data-id]")) existing.set(tr.dataset["id"] ?? "", tr);
    const rows = visible.map((c) => {
      const fresh = row(c, now);
      const old = existing.get(c.id);
      if (old && (old.dataset["signature"] === fresh.dataset["signature"] || old.querySelector("[aria-busy]"))) return old;
      return fresh;
    });
    for (const tr of Array.from(body.children)) {
      if (!rows.includes(tr as HTMLTableRowElement)) tr.remove();
    }
    rows.forEach((tr, i) => {
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] ?? null);
    });
  }

  function row(c: ContainerSummary, now: number): HTMLTableRowElement {
    const running = c.state.status === "running" || c.state.status === "restarting";
    const reading = stats.get(c.id);
    const cpu = reading?.current ? cpuPercent(reading.previous, reading.current) : null;
    const memory = reading?.current?.memory_bytes;
    const rowStatus = h("span", { class: "status", hidden: true });
    const action = (label: string, run: () => Promise<void>, cls = "") => {
      const button = h("button", { type: "button", class: `small ${cls}`, "data-action": label.toLowerCase() }, label);
      button.addEventListener("click", () =>
        // The row stays as it is while busy; redrawn afterwards with the new state.
        void busy(button, rowStatus, async () => {
          notify(rowStatus, "");
          await run();
          await load();
        }).then(render),
      );
      return button;
    };
    const path = `/api/containers/${encodeURIComponent(c.id)}`;
    const actions = running
      ? [action("Stop", () => api(`${path}/stop`, { method: "POST" })), action("Restart", () => api(`${path}/restart`, { method: "POST" }))]
      : [action("Start", () => api(`${path}/start`, { method: "POST" }))];
    actions.push(
      action("Remove", async () => {
        const ok = await confirmDialog(
          `Remove ${c.name}?`,
          running ? "The container is running: it will be killed, and its writable layer and logs deleted." : "Its writable layer and logs are deleted.",
          "Remove",
        );
        if (ok) await api(`${path}?force=${running}`, { method: "DELETE" });
      }, "danger"),
    );
    const reachable = c.engine_available !== false;
    const stateText = reachable ? describeState(c.state, now) : `${describeState(c.state, now)} (engine unavailable)`;
    const cpuText = running && cpu !== null ? formatPercent(cpu) : "–";
    const memoryText = running && memory !== undefined ? formatBytes(memory) : "–";
    const signature = [c.name, c.image, c.engine, c.state.status, stateText, cpuText, memoryText, engines.length].join("\u0000");
    for (const button of actions) button.disabled = !reachable;
    return h(
      "tr",
      { "data-id": c.id, "data-name": c.name, "data-status": c.state.status, "data-signature": signature },
      h("td", {}, h("a", { href: `/containers/${encodeURIComponent(c.id)}`, class: "name" }, c.name), h("div", { class: "sub mono" }, shortId(c.id))),
      h("td", {}, h("span", { class: `state state-${c.state.status}` }, c.state.status)),
      h("td", { class: "mono" }, c.image, engines.length > 1 && c.engine ? h("div", { class: "sub" }, `on ${c.engine}`) : null),
      h("td", {}, stateText),
      h("td", { class: "num" }, cpuText),
      h("td", { class: "num" }, memoryText),
      h("td", { class: "actions" }, ...actions, rowStatus),
    );
  }

  async function pollStats(): Promise<void> {
    const running = containers.filter((c) => c.state.status === "running" && c.engine_available !== false).slice(0, 50);
    await Promise.all(
      running.map(async (c) => {
        try {
          const current = await api<Stats>(`/api/containers/${encodeURIComponent(c.id)}/stats`);
          const entry = stats.get(c.id) ?? {};
          stats.set(c.id, { previous: entry.current, current });
        } catch {
          stats.delete(c.id);
        }
      }),
    );
    render();
  }

  search.addEventListener("input", () => {
    const url = new URL(location.href);
    if (search.value) url.searchParams.set("q", search.value);
    else url.searchParams.delete("q");
    history.replaceState(null, "", url);
    render();
  });
  filter.addEventListener("change", render);

  let reloadTimer: number | undefined;
  watchEvents(
    () => {
      // Events come in bursts (create, start): one reload for the burst.
      window.clearTimeout(reloadTimer);
      reloadTimer = window.setTimeout(() => void load(), 150);
    },
    (connected) => {
      live.textContent = connected ? "live" : "reconnecting…";
      live.dataset["state"] = connected ? "ok" : "busy";
      if (connected) void load();
    },
    () => void loadEngines().then(load),
  );
  void loadEngines().then(load);
  window.setInterval(() => void pollStats(), STATS_EVERY_MS);
  window.setInterval(render, 30_000);
}
