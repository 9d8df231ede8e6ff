// The stats tab: CPU and memory of a running container, polled every two seconds and drawn as
// small SVG line charts of the last two minutes.

import { api, describeError, type Stats } from "../api.ts";
import { notify } from "../dom.ts";
import { formatBytes, formatPercent } from "../format.ts";
import { polylinePoints, Series } from "../models/chart.ts";
import { cpuPercent } from "../models/containers.ts";

const EVERY_MS = 2000;
const SLOTS = 60;
const SVG = "http://www.w3.org/2000/svg";

function chart(title: string): { element: HTMLElement; update: (values: readonly number[], max: number, label: string) => void } {
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 300 100");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const line = document.createElementNS(SVG, "polyline");
  svg.appendChild(line);
  figure.append(caption, svg);
  caption.textContent = title;
  return {
    element: figure,
    update(values, max, label) {
      line.setAttribute("points", polylinePoints(values, SLOTS, 300, 100, max));
      caption.textContent = `${title}: ${label}`;
    },
  };
}

export class StatsView {
  readonly element: HTMLElement;
  private readonly status: HTMLElement;
  private readonly cpu = new Series(SLOTS);
  private readonly memory = new Series(SLOTS);
  private readonly cpuChart = chart("CPU");
  private readonly memoryChart = chart("Memory");
  private readonly pids: HTMLElement;
  private previous: Stats | undefined;
  private timer: number | undefined;

  constructor(private readonly containerId: string) {
    this.status = document.createElement("p");
    this.status.className = "status";
    this.status.hidden = true;
    this.pids = document.createElement("p");
    this.element = document.createElement("div");
    this.element.className = "stats";
    const charts = document.createElement("div");
    charts.className = "charts";
    charts.append(this.cpuChart.element, this.memoryChart.element);
    this.element.append(charts, this.pids, this.status);
  }

  show(): void {
    if (this.timer === undefined) {
      void this.poll();
      this.timer = window.setInterval(() => void this.poll(), EVERY_MS);
    }
  }

  hide(): void {
    window.clearInterval(this.timer);
    this.timer = undefined;
  }

  private async poll(): Promise<void> {
    try {
      const stats = await api<Stats>(`/api/containers/${encodeURIComponent(this.containerId)}/stats`);
      const cpu = cpuPercent(this.previous, stats);
      this.previous = stats;
      if (cpu !== null) this.cpu.push(cpu);
      this.memory.push(stats.memory_bytes);
      const cpus = Math.max(1, stats.online_cpus);
      this.cpuChart.update(this.cpu.points, 100, `${this.cpu.last === undefined ? "–" : formatPercent(this.cpu.last)} (100% = one CPU, ${cpus} online)`);
      const limit = stats.memory_limit_bytes;
      // Against its limit when there is one; otherwise with headroom over the largest reading.
      this.memoryChart.update(this.memory.points, limit ?? Math.max(...this.memory.points) * 1.25, `${formatBytes(stats.memory_bytes)}${limit ? ` of ${formatBytes(limit)}` : ", no limit"}`);
      this.pids.textContent = `Processes: ${stats.pids}${stats.pids_limit ? ` (limit ${stats.pids_limit})` : ""}`;
      notify(this.status, "");
    } catch (error) {
      notify(this.status, `No stats: ${describeError(error)}`);
    }
  }
}
