// Pure logic of the containers list: what a row says about a container's state, search and
// filters, and CPU usage from two stats readings.

import type { ContainerState, ContainerSummary, Stats } from "../api.ts";
import { formatDuration } from "../format.ts";

/** `docker ps`-style status: "Up 5 minutes", "Exited (0) 3 minutes ago", "Created". */
export function describeState(state: ContainerState, now: number): string {
  const since = (time: string | null) => (time ? formatDuration(now - Date.parse(time)) : null);
  switch (state.status) {
    case "running": {
      const up = since(state.started_at);
      return up ? `Up ${up}` : "Up";
    }
    case "restarting":
      return `Restarting (${state.exit_code ?? "?"})${state.restart_count ? `, ${state.restart_count} restarts` : ""}`;
    case "exited": {
      const ago = since(state.finished_at);
      const oom = state.oom_killed ? ", out of memory" : "";
      return `Exited (${state.exit_code ?? "?"})${oom}${ago ? ` ${ago} ago` : ""}`;
    }
    case "created":
      return state.error ? `Created; start failed: ${state.error}` : "Created";
    case "removing":
      return "Removing";
    case "dead":
      return "Dead";
  }
}

export type StatusFilter = "all" | "running" | "stopped";

/** Whether a container matches the search text (name, image, id prefix, command) and filter. */
export function matchesFilter(container: ContainerSummary, search: string, status: StatusFilter): boolean {
  const running = container.state.status === "running" || container.state.status === "restarting";
  if (status === "running" && !running) return false;
  if (status === "stopped" && running) return false;
  const words = search.toLowerCase().split(/\s+/).filter(Boolean);
  const haystack = [container.name, container.image, container.command.join(" "), ...Object.entries(container.labels).map(([k, v]) => `${k}=${v}`)]
    .join(" ")
    .toLowerCase();
  return words.every((word) => haystack.includes(word) || container.id.startsWith(word));
}

/** Running containers first, then newest first. */
export function sortContainers(containers: ContainerSummary[]): ContainerSummary[] {
  const rank = (c: ContainerSummary) => (c.state.status === "running" || c.state.status === "restarting" ? 0 : 1);
  return [...containers].sort((a, b) => rank(a) - rank(b) || Date.parse(b.created) - Date.parse(a.created));
}

/**
 * CPU use between two readings, as `docker stats` shows it: 100% is one CPU fully busy (so a
 * container using two CPUs shows 200%). Null when the readings cannot be compared.
 */
export function cpuPercent(previous: Stats | undefined, current: Stats): number | null {
  if (!previous) return null;
  const elapsedNs = (Date.parse(current.read_at) - Date.parse(previous.read_at)) * 1e6;
  const usedNs = current.cpu_total_ns - previous.cpu_total_ns;
  if (!(elapsedNs > 0) || usedNs < 0) return null;
  return (usedNs / elapsedNs) * 100;
}
