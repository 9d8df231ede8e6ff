// The logs tab: opens at the tail (the server reads backwards, so even a huge log opens at
// once), follows live over the logs WebSocket, pauses, filters stdout/stderr, shows or hides
// times, highlights a search, and downloads the whole log.

import { describeError } from "../api.ts";
import { h, notify, replace } from "../dom.ts";
import { decodeLogFrame, highlight, LineAssembler, logsAsText, type LogLine } from "../models/logs.ts";

/** Lines kept on screen; older ones scroll away (the download has everything). */
const MAX_LINES = 20_000;

export class LogsView {
  readonly element: HTMLElement;
  private readonly output: HTMLElement;
  private readonly status: HTMLElement;
  private readonly pauseButton: HTMLButtonElement;
  private readonly tail: HTMLSelectElement;
  private readonly search: HTMLInputElement;
  private readonly matches: HTMLElement;
  private lines: LogLine[] = [];
  private pending: LogLine[] = [];
  private paused = false;
  private socket: WebSocket | null = null;
  private started = false;

  constructor(private readonly containerId: string) {
    this.output = h("div", { class: "log-output", role: "log", "aria-live": "off", "data-testid": "log-output", tabindex: 0 });
    this.status = h("span", { class: "status", hidden: true });
    this.pauseButton = h("button", { type: "button", "data-action": "pause", onclick: () => this.togglePause() }, "Pause");
    this.tail = h(
      "select",
      { "aria-label": "Lines to load", onchange: () => this.connect() },
      ...[100, 500, 1000, 5000].map((n) => h("option", { value: n, selected: n === 500 }, `last ${n}`)),
      h("option", { value: "all" }, "all"),
    );
    const toggle = (label: string, cls: string, checked: boolean) => {
      const box = h("input", { type: "checkbox", checked });
      box.addEventListener("change", () => this.output.classList.toggle(cls, !box.checked));
      this.output.classList.toggle(cls, !checked);
      return h("label", { class: "check" }, box, ` ${label}`);
    };
    this.search = h("input", { type: "search", placeholder: "Search", "aria-label": "Search the logs" });
    this.matches = h("span", { class: "sub" });
    let searchTimer: number | undefined;
    this.search.addEventListener("input", () => {
      window.clearTimeout(searchTimer);
      searchTimer = window.setTimeout(() => this.rerender(true), 150);
    });
    const download = h("button", { type: "button" }, "Download");
    download.addEventListener("click", () => void this.download(download));
    this.element = h(
      "div",
      { class: "logs" },
      h("div", { class: "toolbar" }, this.pauseButton, this.tail, toggle("stdout", "hide-stdout", true), toggle("stderr", "hide-stderr", true), toggle("times", "hide-times", false), this.search, this.matches, download, this.status),
      this.output,
    );
  }

  /** Connects the first time the tab is shown. */
  show(): void {
    if (!this.started) {
      this.started = true;
      this.connect();
    }
  }

  private url(follow: boolean, tail: string): string {
    const url = new URL(`/api/containers/${encodeURIComponent(this.containerId)}/logs/ws`, location.origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("tail", tail);
    if (follow) url.searchParams.set("follow", "true");
    return url.toString();
  }

  private connect(): void {
    this.socket?.close();
    this.lines = [];
    this.pending = [];
    replace(this.output);
    const assembler = new LineAssembler();
    const socket = new WebSocket(this.url(true, this.tail.value));
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    notify(this.status, "Loading…", "busy");
    socket.addEventListener("open", () => notify(this.status, "Following", "ok"));
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      if (typeof event.data === "string") {
        const message = JSON.parse(event.data) as { type: string; message?: string };
        if (message.type === "end") {
          this.add(assembler.flush(Date.now()));
          notify(this.status, "The container stopped: end of log", "ok");
        } else if (message.type === "error") {
          notify(this.status, `The log stream failed: ${message.message ?? "unknown error"}`);
        }
        return;
      }
      try {
        this.add(assembler.push(decodeLogFrame(event.data as ArrayBuffer)));
      } catch (error) {
        notify(this.status, describeError(error));
      }
    });
    socket.addEventListener("close", () => {
      if (socket === this.socket && this.status.dataset["state"] === "ok" && this.status.textContent === "Following") {
        notify(this.status, "Disconnected: choose a tail size to reload", "error");
      }
    });
    socket.addEventListener("error", () => {
      if (socket === this.socket) notify(this.status, "Cannot open the log stream (the container may be gone)");
    });
  }

  private add(lines: LogLine[]): void {
    if (lines.length === 0) return;
    if (this.paused) {
      this.pending.push(...lines);
      this.pauseButton.textContent = `Resume (${this.pending.length} new)`;
      return;
    }
    this.append(lines);
  }

  private append(lines: LogLine[]): void {
    const atBottom = this.output.scrollHeight - this.output.scrollTop - this.output.clientHeight < 40;
    this.lines.push(...lines);
    const query = this.search.value;
    const fragment = document.createDocumentFragment();
    for (const line of lines) fragment.appendChild(this.lineElement(line, query));
    this.output.appendChild(fragment);
    const excess = this.lines.length - MAX_LINES;
    if (excess > 0) {
      this.lines.splice(0, excess);
      for (let i = 0; i < excess; i++) this.output.firstElementChild?.remove();
    }
    if (query) this.countMatches();
    if (atBottom) this.output.scrollTop = this.output.scrollHeight;
  }

  private lineElement(line: LogLine, query: string): HTMLElement {
    const text = h("span", { class: "text" });
    for (const segment of highlight(line.text, query)) {
      text.appendChild(segment.match ? h("mark", {}, segment.text) : document.createTextNode(segment.text));
    }
    return h("div", { class: "line", "data-stream": line.stream }, h("time", { class: "ts" }, new Date(line.time).toISOString().replace("T", " ").slice(0, 23)), text);
  }

  private rerender(scrollToMatch: boolean): void {
    const query = this.search.value;
    const fragment = document.createDocumentFragment();
    for (const line of this.lines) fragment.appendChild(this.lineElement(line, query));
    replace(this.output, fragment);
    this.countMatches();
    if (scrollToMatch && query) this.output.querySelector("mark")?.scrollIntoView({ block: "center" });
  }

  private countMatches(): void {
    const count = this.search.value ? this.output.querySelectorAll("mark").length : 0;
    this.matches.textContent = this.search.value ? `${count} match${count === 1 ? "" : "es"}` : "";
  }

  private togglePause(): void {
    this.paused = !this.paused;
    this.pauseButton.setAttribute("aria-pressed", String(this.paused));
    if (!this.paused) {
      const held = this.pending;
      this.pending = [];
      this.append(held);
      this.pauseButton.textContent = "Pause";
    } else {
      this.pauseButton.textContent = "Resume";
    }
  }

  /** The whole log (not only what is on screen), read once over a non-following socket. */
  private async download(button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    const all: LogLine[] = [];
    const assembler = new LineAssembler();
    try {
      await new Promise<void>((resolve, reject) => {
        const socket = new WebSocket(this.url(false, "all"));
        socket.binaryType = "arraybuffer";
        let bytes = 0;
        socket.addEventListener("message", (event) => {
          if (typeof event.data === "string") {
            all.push(...assembler.flush(Date.now()));
            resolve();
            socket.close();
            return;
          }
          bytes += (event.data as ArrayBuffer).byteLength;
          all.push(...assembler.push(decodeLogFrame(event.data as ArrayBuffer)));
          notify(this.status, `Reading the log… ${Math.round(bytes / 1024)} KiB`, "busy");
        });
        socket.addEventListener("close", () => resolve());
        socket.addEventListener("error", () => reject(new Error("the log could not be read")));
      });
      const blob = new Blob([logsAsText(all, true)], { type: "text/plain" });
      const link = h("a", { href: URL.createObjectURL(blob), download: `${this.containerId.slice(0, 12)}.log` });
      document.body.appendChild(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
      notify(this.status, `Downloaded ${all.length} lines`, "ok");
    } catch (error) {
      notify(this.status, `Download failed: ${describeError(error)}`);
    } finally {
      button.disabled = false;
    }
  }

  dispose(): void {
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }
}
