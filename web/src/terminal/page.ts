// The full-window terminal page, `/terminals/{id}`: for signed-in users, and for guests who
// came with a share link (`?link=SECRET`), whose socket uses that link and nothing else.

import { api, type ContainerSummary, type TerminalInfo } from "../api.ts";
import { byId, h, replace } from "../dom.ts";
import { TerminalView } from "./view.ts";

const GUEST_NAME_KEY = "porthole.guestName";

export function terminalPage(): void {
  const root = byId("terminal-root");
  const terminal = root.dataset["terminal"] ?? "";
  const link = new URLSearchParams(location.search).get("link") ?? undefined;
  const guest = link !== undefined;
  const name = guest ? (localStorage.getItem(GUEST_NAME_KEY) ?? "guest") : undefined;
  const view = new TerminalView({ origin: location.origin, terminal, link, name }, { guest });
  view.mount(root);
  view.focus();
  if (!guest) void showContainer(terminal);
}

/** Names the container in the top bar, with a way back to it. */
async function showContainer(terminal: string): Promise<void> {
  const target = document.getElementById("terminal-title");
  if (!target) return;
  try {
    const info = await api<TerminalInfo>(`/api/terminals/${encodeURIComponent(terminal)}`);
    const containers = await api<ContainerSummary[]>("/api/containers?all=true");
    const container = containers.find((c) => c.id === info.container_id);
    const label = container ? container.name : info.container_id.slice(0, 12);
    replace(
      target,
      h("a", { href: `/containers/${encodeURIComponent(info.container_id)}` }, label),
      ` — ${info.kind === "attach" ? "main process" : "shell"}`,
    );
    document.title = `${label} — terminal — Porthole`;
  } catch {
    // The terminal view reports connection problems itself; the title just stays plain.
  }
}
