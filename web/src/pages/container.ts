// A container's page (`/containers/{id}`): its state and actions in the header, and tabs for
// the overview (inspect data readable, raw JSON too), logs, terminals and stats.

import { api, describeError, type ContainerDetails, type TerminalInfo } from "../api.ts";
import { busy, byId, confirmDialog, h, notify, replace } from "../dom.ts";
import { formatBytes, shortId } from "../format.ts";
import { describeState } from "../models/containers.ts";
import { watchEvents } from "../events.ts";
import { TerminalView } from "../terminal/view.ts";
import { LogsView } from "./logs-view.ts";
import { StatsView } from "./stats-view.ts";

const TABS = ["overview", "logs", "terminals", "stats"] as const;
type Tab = (typeof TABS)[number];

export function containerPage(): void {
  const root = byId("container-root");
  const id = root.dataset["container"] ?? "";
  const path = `/api/containers/${encodeURIComponent(id)}`;
  const title = byId("container-name");
  const state = byId("container-state");
  const actions = byId("container-actions");
  const status = byId("container-status");
  const panels = Object.fromEntries(TABS.map((tab) => [tab, byId(`panel-${tab}`)])) as Record<Tab, HTMLElement>;
  const logs = new LogsView(id);
  const stats = new StatsView(id);
  const terminals = new TerminalsPanel(id);
  panels.logs.appendChild(logs.element);
  panels.stats.appendChild(stats.element);
  panels.terminals.appendChild(terminals.element);
  let details: ContainerDetails | null = null;

  function select(tab: Tab): void {
    for (const name of TABS) {
      panels[name].hidden = name !== tab;
      document.getElementById(`tab-${name}`)?.setAttribute("aria-selected", String(name === tab));
    }
    if (tab === "logs") logs.show();
    if (tab === "stats") stats.show();
    else stats.hide();
    if (tab === "terminals") terminals.show();
  }
  for (const tab of TABS) {
    byId(`tab-${tab}`).addEventListener("click", () => {
      history.replaceState(null, "", `#${tab}`);
      select(tab);
    });
  }
  const fromHash = location.hash.slice(1);
  select((TABS as readonly string[]).includes(fromHash) ? (fromHash as Tab) : "overview");

  async function load(): Promise<void> {
    try {
      details = await api<ContainerDetails>(path);
    } catch (error) {
      notify(status, `Cannot load the container: ${describeError(error)}`);
      return;
    }
    document.title = `${details.name} — Porthole`;
    title.textContent = details.name;
    state.textContent = describeState(details.state, Date.now());
    state.className = `state state-${details.state.status}`;
    renderActions(details);
    renderOverview(panels.overview, details);
  }

  function renderActions(c: ContainerDetails): void {
    const running = c.state.status === "running" || c.state.status === "restarting";
    const action = (label: string, run: () => Promise<void>, cls = "") => {
      const button = h("button", { type: "button", class: cls, "data-action": label.toLowerCase() }, label);
      button.addEventListener("click", () => void busy(button, status, async () => {
        notify(status, `${label}…`, "busy");
        await run();
        notify(status, "");
        await load();
      }));
      return button;
    };
    replace(
      actions,
      running ? action("Stop", () => api(`${path}/stop`, { method: "POST" })) : action("Start", () => api(`${path}/start`, { method: "POST" })),
      running ? action("Restart", () => api(`${path}/restart`, { method: "POST" })) : null,
      action("Remove", async () => {
        const ok = await confirmDialog(`Remove ${c.name}?`, running ? "It is running: it will be killed, and its writable layer and logs deleted." : "Its writable layer and logs are deleted.", "Remove");
        if (!ok) return;
        await api(`${path}?force=${running}`, { method: "DELETE" });
        location.assign("/");
      }, "danger"),
    );
  }

  watchEvents(
    (event) => {
      if (event.container_id !== id) return;
      if (event.action.type === "destroy") {
        notify(status, "This container was removed.", "error");
        return;
      }
      void load();
    },
    () => {},
  );
  void load();
  // "Up 5 minutes" keeps counting without a reload.
  window.setInterval(() => {
    if (details) state.textContent = describeState(details.state, Date.now());
  }, 10_000);
}

function renderOverview(panel: HTMLElement, c: ContainerDetails): void {
  const config = c.config as Record<string, unknown>;
  const resources = (config["resources"] ?? {}) as { memory_bytes?: number | null; cpu_millis?: number | null; pids_limit?: number | null };
  const policy = (config["restart_policy"] ?? {}) as { name?: string; max_retries?: number };
  const mounts = (config["mounts"] ?? []) as { type: string; source?: string; name?: string; target: string; read_only?: boolean }[];
  const time = (t: string | null) => (t ? new Date(t).toLocaleString() : "–");
  const facts: [string, Node | string][] = [
    ["Id", h("span", { class: "mono" }, c.id)],
    ["Image", h("span", { class: "mono" }, `${c.image} (${shortId(c.image_id)})`)],
    ["Command", h("code", {}, [c.path, ...c.args].join(" "))],
    ["Status", describeState(c.state, Date.now())],
    ["Created", time(c.created)],
    ["Started", time(c.state.started_at)],
    ["Finished", time(c.state.finished_at)],
    ["Exit code", c.state.exit_code === null ? "–" : String(c.state.exit_code)],
    ["Restarts", `${c.state.restart_count} (policy: ${policy.name ?? "no"}${policy.max_retries ? `, at most ${policy.max_retries}` : ""})`],
    ["Terminal", `${c.config.tty ? "TTY" : "no TTY"}, ${c.config.open_stdin ? "stdin open" : "no stdin"}`],
    ["Limits", [resources.memory_bytes ? `memory ${formatBytes(resources.memory_bytes)}` : "", resources.cpu_millis ? `${resources.cpu_millis / 1000} CPUs` : "", resources.pids_limit ? `${resources.pids_limit} processes` : ""].filter(Boolean).join(", ") || "none"],
    ["Network", String(config["network_mode"] ?? "none")],
  ];
  if (c.state.error) facts.push(["Last error", c.state.error]);
  panel.replaceChildren(
    h("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h3", {}, "Environment"),
    c.env.length ? h("ul", { class: "mono list" }, ...c.env.map((e) => h("li", {}, e))) : h("p", {}, "none"),
    h("h3", {}, "Mounts"),
    mounts.length
      ? h("ul", { class: "mono list" }, ...mounts.map((m) => h("li", {}, `${m.type} ${m.source ?? m.name ?? ""} → ${m.target}${m.read_only ? " (read-only)" : ""}`)))
      : h("p", {}, "none"),
    h("details", { class: "raw" }, h("summary", {}, "Raw JSON"), h("pre", { class: "mono" }, JSON.stringify(c, null, 2))),
  );
}

/** The terminals of this container: open new ones (attach, or a shell as a chosen user) in tabs. */
class TerminalsPanel {
  readonly element: HTMLElement;
  private readonly tabs: HTMLElement;
  private readonly stage: HTMLElement;
  private readonly existing: HTMLElement;
  private readonly status: HTMLElement;
  private readonly open = new Map<string, { view: TerminalView; tab: HTMLElement }>();
  private started = false;

  constructor(private readonly containerId: string) {
    this.status = h("span", { class: "status", hidden: true });
    const user = h("input", { type: "text", placeholder: "user (default: the image's)", "aria-label": "User", size: 22 });
    const shell = h("input", { type: "text", value: "sh", "aria-label": "Shell command", size: 10 });
    const attach = h("button", { type: "button", "data-action": "attach" }, "Attach to main process");
    const exec = h("button", { type: "button", class: "primary", "data-action": "new-shell" }, "New shell");
    attach.addEventListener("click", () => void busy(attach, this.status, () => this.create({ kind: "attach" })));
    exec.addEventListener("click", () =>
      void busy(exec, this.status, () => this.create({ kind: "exec", cmd: shell.value.trim().split(/\s+/).filter(Boolean), ...(user.value.trim() ? { user: user.value.trim() } : {}) })),
    );
    this.tabs = h("div", { class: "term-tabs", role: "tablist" });
    this.stage = h("div", { class: "term-stage" });
    this.existing = h("ul", { class: "existing" });
    this.element = h("div", { class: "terminals" }, h("div", { class: "toolbar" }, attach, shell, user, exec, this.status), this.existing, this.tabs, this.stage);
  }

  show(): void {
    if (this.started) return;
    this.started = true;
    void this.refresh();
  }

  private async refresh(): Promise<void> {
    try {
      const all = await api<TerminalInfo[]>("/api/terminals");
      const mine = all.filter((t) => t.container_id === this.containerId && !t.ended);
      replace(
        this.existing,
        ...mine.map((t) =>
          h(
            "li",
            {},
            `${t.kind === "attach" ? "Main process" : "Shell"} by ${t.owner}, ${t.clients.length} connected `,
            h("button", { type: "button", class: "small", onclick: () => this.activate(t.id, t.kind) }, "Open here"),
            " ",
            h("a", { href: `/terminals/${encodeURIComponent(t.id)}` }, "full window"),
          ),
        ),
      );
    } catch (error) {
      notify(this.status, `Cannot list terminals: ${describeError(error)}`);
    }
  }

  private async create(body: Record<string, unknown>): Promise<void> {
    notify(this.status, "Opening…", "busy");
    const terminal = await api<TerminalInfo>(`/api/containers/${encodeURIComponent(this.containerId)}/terminals`, { method: "POST", body });
    notify(this.status, "");
    this.activate(terminal.id, terminal.kind);
    void this.refresh();
  }

  private activate(id: string, kind: string): void {
    let entry = this.open.get(id);
    if (!entry) {
      const view = new TerminalView({ origin: location.origin, terminal: id }, { guest: false });
      const tab = h(
        "div",
        { class: "term-tab", role: "tab" },
        h("button", { type: "button", class: "tab-label", onclick: () => this.activate(id, kind) }, `${kind === "attach" ? "main" : "shell"} ${this.open.size + 1}`),
        h("a", { href: `/terminals/${encodeURIComponent(id)}`, title: "Open in a full window", class: "small" }, "⤢"),
        h("button", { type: "button", class: "small", title: "Close this tab (the terminal keeps running)", "aria-label": "Close tab", onclick: () => this.close(id) }, "×"),
      );
      this.tabs.appendChild(tab);
      const holder = h("div", { class: "term-holder" });
      this.stage.appendChild(holder);
      view.mount(holder);
      entry = { view, tab };
      this.open.set(id, entry);
    }
    for (const [other, { view, tab }] of this.open) {
      const active = other === id;
      tab.setAttribute("aria-selected", String(active));
      (view.element.parentElement as HTMLElement).hidden = !active;
    }
    entry.view.focus();
  }

  private close(id: string): void {
    const entry = this.open.get(id);
    if (!entry) return;
    entry.view.element.parentElement?.remove();
    entry.view.dispose();
    entry.tab.remove();
    this.open.delete(id);
    const next = this.open.keys().next();
    if (!next.done) this.activate(next.value, "");
  }
}
