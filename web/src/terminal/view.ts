// One shared terminal on screen: xterm.js (WebGL renderer, DOM fallback) fed with the raw bytes
// of the terminal WebSocket, acknowledging what it has drawn, reconnecting by itself with a
// resume offset so the screen survives a network drop; and around it the presence bar (who is
// here, with which role; the owner grants and takes back typing), the viewer banner, sharing,
// clipboard handling, font size and, on touch screens, a row of special keys.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { WebglAddon } from "@xterm/addon-webgl";
import { h, replace } from "../dom.ts";
import {
  canType,
  encodeClientMessage,
  FlowControl,
  parseServerMessage,
  reconnectDelay,
  socketUrl,
  specialKey,
  SPECIAL_KEY_NAMES,
  withCtrl,
  type Client,
  type ClientMessage,
  type Endpoint,
  type Role,
  type ServerMessage,
  type Size,
} from "./protocol.ts";
import { copyText } from "./clipboard.ts";
import { openShareDialog } from "./share.ts";

const FONT_SIZE_KEY = "porthole.terminal.fontSize";
/** Smallest font a shrunk view goes down to. */
const MIN_FONT_SIZE = 7;
const encoder = new TextEncoder();

export interface TerminalViewOptions {
  /** A share-link guest: no sharing, no API calls beyond the socket. */
  guest: boolean;
}

/** Every terminal on the page, for automation and tests (`window.portholeTerminals`). */
const mounted: TerminalView[] = [];
declare global {
  interface Window {
    portholeTerminals?: TerminalView[];
  }
}

export class TerminalView {
  readonly element: HTMLElement;
  private readonly term: Terminal;
  private readonly fit = new FitAddon();
  private readonly flow = new FlowControl();
  private readonly status: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly presence: HTMLElement;
  private readonly screen: HTMLElement;
  private readonly shareButton: HTMLButtonElement;
  private readonly askButton: HTMLButtonElement;
  /** The owner's list of viewers asking to type. */
  private readonly requests: HTMLElement;
  private readonly keyRow: HTMLElement;
  private socket: WebSocket | null = null;
  private me: { client: number; role: Role } | null = null;
  private clients: Client[] = [];
  private serverSize: Size | null = null;
  private acceptsInput = true;
  private hadHello = false;
  private attempt = 0;
  private finished = false;
  private reconnectTimer: number | undefined;
  private stickyCtrl = false;
  private readonly resizeObserver: ResizeObserver;
  renderer: "webgl" | "dom" = "dom";
  /** The font size the user chose (views of someone else's screen may show it smaller). */
  private preferredFontSize: number;

  constructor(
    private readonly endpoint: Endpoint,
    private readonly options: TerminalViewOptions,
  ) {
    const fontSize = Number(localStorage.getItem(FONT_SIZE_KEY)) || 14;
    this.preferredFontSize = fontSize;
    this.term = new Terminal({
      fontSize,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      cursorBlink: true,
      scrollback: 5000,
      allowProposedApi: false,
      theme: { background: "#0d1117", foreground: "#e6edf3", cursor: "#e6edf3", selectionBackground: "#264f78" },
    });
    this.term.loadAddon(this.fit);

    this.status = h("span", { class: "term-status", "data-testid": "terminal-status", role: "status" }, "Connecting…");
    this.presence = h("ul", { class: "presence", "aria-label": "Connected people", "data-testid": "presence" });
    this.banner = h("div", { class: "term-banner", hidden: true, "data-testid": "terminal-banner" });
    this.screen = h("div", { class: "term-screen" });
    this.shareButton = h("button", { type: "button", class: "primary", hidden: true, onclick: () => this.share() }, "Share…");
    this.askButton = h("button", { type: "button", hidden: true, "data-action": "request-control", onclick: () => this.askToType() }, "Ask to type");
    this.requests = h("div", { class: "control-requests", "aria-live": "polite" });
    const smaller = h("button", { type: "button", title: "Smaller text", "aria-label": "Smaller text", onclick: () => this.zoom(-1) }, "A−");
    const larger = h("button", { type: "button", title: "Larger text", "aria-label": "Larger text", onclick: () => this.zoom(1) }, "A+");
    const keysToggle = h("button", { type: "button", title: "Special keys", onclick: () => (this.keyRow.hidden = !this.keyRow.hidden) }, "Keys");
    this.keyRow = this.buildKeyRow();
    this.keyRow.hidden = !matchMedia("(pointer: coarse)").matches;
    this.element = h(
      "section",
      { class: "terminal-view" },
      h("div", { class: "term-toolbar" }, this.presence, h("span", { class: "spacer" }), this.status, smaller, larger, keysToggle, this.askButton, this.shareButton),
      this.requests,
      this.banner,
      this.screen,
      this.keyRow,
    );
    this.resizeObserver = new ResizeObserver(() => this.layout());
  }

  /** Puts the terminal into `parent` and connects. */
  mount(parent: HTMLElement): void {
    parent.appendChild(this.element);
    this.term.open(this.screen);
    this.loadRenderer();
    this.wireInput();
    this.resizeObserver.observe(this.screen);
    mounted.push(this);
    window.portholeTerminals = mounted;
    this.connect();
  }

  /** Disconnects for good and frees the renderer. */
  dispose(): void {
    this.finished = true;
    window.clearTimeout(this.reconnectTimer);
    this.resizeObserver.disconnect();
    this.socket?.close();
    this.term.dispose();
    this.element.remove();
    const index = mounted.indexOf(this);
    if (index >= 0) mounted.splice(index, 1);
  }

  focus(): void {
    this.term.focus();
  }

  /** The visible screen as text, one line per row (for automation and tests). */
  screenText(): string {
    const buffer = this.term.buffer.active;
    const lines: string[] = [];
    for (let row = 0; row < buffer.length; row++) {
      lines.push(buffer.getLine(row)?.translateToString(true) ?? "");
    }
    return lines.join("\n");
  }

  get role(): Role | null {
    return this.me?.role ?? null;
  }

  private loadRenderer(): void {
    // WebGL draws large outputs far faster; without it (no GPU, blocked, context lost) xterm's
    // DOM renderer takes over. Touch screens (phones, for watching) get the DOM renderer
    // outright: throughput matters little there, and WebGL drew nothing in our runs of
    // Chromium's software GL at a phone's pixel ratio.
    if (matchMedia("(pointer: coarse)").matches) {
      this.renderer = "dom";
      this.element.dataset["renderer"] = this.renderer;
      return;
    }
    try {
      const webgl = new WebglAddon();
      webgl.onContextLoss(() => {
        webgl.dispose();
        this.renderer = "dom";
        this.element.dataset["renderer"] = "dom";
      });
      this.term.loadAddon(webgl);
      this.renderer = "webgl";
    } catch {
      this.renderer = "dom";
    }
    this.element.dataset["renderer"] = this.renderer;
  }

  private wireInput(): void {
    this.term.onData((data) => this.type(data));
    this.term.onBinary((data) => this.sendBytes(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    this.term.onResize(({ rows, cols }) => {
      if (this.me?.role === "owner") this.send({ type: "resize", rows, cols });
    });

    // Copy on select (debounced: selection changes continuously while dragging).
    let selectionTimer: number | undefined;
    this.term.onSelectionChange(() => {
      window.clearTimeout(selectionTimer);
      selectionTimer = window.setTimeout(() => {
        if (this.term.hasSelection()) void copyText(this.term.getSelection());
      }, 200);
    });
    // Ctrl+Shift+C / Ctrl+Shift+V, as in desktop terminals (plain Ctrl+C is the shell's).
    this.term.attachCustomKeyEventHandler((event) => {
      if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
      if (event.code === "KeyC") {
        if (this.term.hasSelection()) void copyText(this.term.getSelection());
        event.preventDefault();
        return false;
      }
      if (event.code === "KeyV") {
        event.preventDefault();
        void this.pasteFromClipboard();
        return false;
      }
      return true;
    });
    // Right-click pastes where the browser lets a page read the clipboard; otherwise the
    // browser's own menu (with Paste) opens over xterm's textarea.
    this.screen.addEventListener("contextmenu", (event) => {
      if (navigator.clipboard && typeof navigator.clipboard.readText === "function" && window.isSecureContext) {
        event.preventDefault();
        void this.pasteFromClipboard();
      }
    });
  }

  private async pasteFromClipboard(): Promise<void> {
    try {
      const text = await navigator.clipboard.readText();
      if (text) this.term.paste(text);
    } catch {
      this.showBanner("The browser did not allow reading the clipboard: paste with Ctrl+Shift+V or the browser's menu.", "info");
    }
  }

  private type(data: string): void {
    if (this.stickyCtrl) {
      data = withCtrl(data);
      this.setStickyCtrl(false);
    }
    this.sendBytes(encoder.encode(data));
  }

  private sendBytes(bytes: Uint8Array): void {
    if (!this.me || !canType(this.me.role) || !this.acceptsInput) return;
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(bytes);
  }

  private send(message: ClientMessage): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(encodeClientMessage(message));
  }

  private connect(): void {
    if (this.finished) return;
    // After the first hello the screen holds everything up to `received`: resume from there.
    const url = this.hadHello ? this.endpointUrl(this.flow.received) : this.endpointUrl();
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    let greeted = false;
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      if (typeof event.data === "string") {
        let message: ServerMessage;
        try {
          message = parseServerMessage(event.data);
        } catch (error) {
          console.warn("unreadable terminal control message", error);
          return;
        }
        if (message.type === "hello") greeted = true;
        this.onControl(message);
      } else {
        this.onOutput(new Uint8Array(event.data as ArrayBuffer));
      }
    });
    socket.addEventListener("close", () => {
      if (socket !== this.socket || this.finished) return;
      this.socket = null;
      this.attempt = greeted ? 1 : this.attempt + 1;
      const delay = reconnectDelay(this.attempt);
      this.setStatus(`Disconnected — reconnecting in ${Math.ceil(delay / 1000)} s${this.attempt > 1 ? ` (attempt ${this.attempt})` : ""}…`, "busy");
      if (this.attempt >= 4) {
        this.showBanner(
          this.options.guest
            ? "Cannot reach the terminal. The share link may have expired or been revoked, or the server is unreachable; still trying."
            : "Cannot reach the terminal (the server is unreachable, or the terminal is gone); still trying.",
          "error",
        );
      }
      this.reconnectTimer = window.setTimeout(() => this.connect(), delay);
    });
  }

  private endpointUrl(offset?: number): string {
    return socketUrl(this.endpoint, offset);
  }

  private onOutput(bytes: Uint8Array): void {
    const piece = this.flow.receive(bytes.length);
    this.term.write(bytes, () => {
      const ack = this.flow.rendered(piece);
      if (ack !== null) this.send({ type: "ack", offset: ack });
    });
  }

  private onControl(message: ServerMessage): void {
    switch (message.type) {
      case "hello": {
        const resumed = this.hadHello && message.offset === this.flow.received;
        if (this.hadHello && !resumed) this.term.reset();
        this.flow.restart(message.offset);
        this.hadHello = true;
        this.attempt = 0;
        this.me = { client: message.client, role: message.role };
        this.acceptsInput = message.input;
        this.serverSize = message.size;
        this.clients = message.clients;
        this.setStatus(resumed ? "Reconnected" : "Connected", "ok");
        this.hideBanner("error");
        this.applyRole();
        break;
      }
      case "presence": {
        this.clients = message.clients;
        for (const request of Array.from(this.requests.children)) {
          const asking = Number((request as HTMLElement).dataset["client"]);
          if (!message.clients.some((c) => c.client === asking && c.role === "viewer")) request.remove();
        }
        const mine = message.clients.find((c) => c.client === this.me?.client);
        if (mine && this.me && mine.role !== this.me.role) {
          this.me.role = mine.role;
          this.applyRole();
        } else {
          this.renderPresence();
        }
        break;
      }
      case "size":
        this.serverSize = { rows: message.rows, cols: message.cols };
        this.layout();
        break;
      case "reset":
        // Output was lost for this client: start a clean screen at the new offset.
        this.term.reset();
        this.flow.restart(message.offset);
        this.send({ type: "ack", offset: message.offset });
        if (message.missed > 0) this.showBanner(`This view fell behind and skipped ${message.missed} bytes of output.`, "info");
        break;
      case "error":
        if (message.code === "forbidden") {
          this.showBanner(message.message, "info");
        } else {
          this.showBanner(`The server refused a message: ${message.message}`, "error");
        }
        break;
      case "control_request":
        if (this.me?.role === "owner") this.showRequest(message.client, message.name);
        break;
      case "exit":
        this.finished = true;
        this.setStatus(message.code === null ? "The process ended" : `The process exited with code ${message.code}`, "ended");
        this.showBanner(
          message.code === null ? "The process has ended; this terminal is closed." : `The process exited with code ${message.code}; this terminal is closed.`,
          "info",
        );
        this.term.options.disableStdin = true;
        break;
      case "closed":
        this.finished = true;
        this.setStatus("Closed", "ended");
        this.showBanner(
          message.reason === "expired" ? "The share link has expired." : message.reason === "revoked" ? "The share link was revoked by the owner." : `Closed: ${message.reason}`,
          "error",
        );
        this.term.options.disableStdin = true;
        break;
    }
  }

  /** Input, banner, sharing and size after our role changed (or became known). */
  private applyRole(): void {
    const role = this.me?.role ?? "viewer";
    const typing = canType(role) && this.acceptsInput;
    this.term.options.disableStdin = !typing;
    this.element.dataset["role"] = role;
    this.shareButton.hidden = this.options.guest || role !== "owner";
    this.askButton.hidden = role !== "viewer" || !this.acceptsInput;
    if (role !== "owner") replace(this.requests);
    if (!this.acceptsInput) {
      this.showBanner("This process takes no input: you can watch its output.", "viewer");
    } else if (role === "viewer") {
      this.showBanner("You are a viewer: you see everything, but your typing is not sent. The owner can let you type.", "viewer");
    } else {
      this.hideBanner("viewer");
    }
    this.renderPresence();
    this.layout();
  }

  /**
   * The PTY follows its owner: the owner's terminal fits its box and reports the size; everyone
   * else shows the owner's size and scrolls when the box is smaller.
   */
  private layout(): void {
    if (!this.term.element) return;
    if (this.me?.role === "owner" || !this.serverSize) {
      if (this.term.options.fontSize !== this.preferredFontSize) this.term.options.fontSize = this.preferredFontSize;
      const dims = this.fit.proposeDimensions();
      if (dims && dims.cols > 0 && dims.rows > 0 && Number.isFinite(dims.cols)) {
        if (dims.cols !== this.term.cols || dims.rows !== this.term.rows) {
          this.term.resize(dims.cols, dims.rows);
        } else if (this.me?.role === "owner" && (this.serverSize?.cols !== dims.cols || this.serverSize?.rows !== dims.rows)) {
          this.send({ type: "resize", rows: dims.rows, cols: dims.cols });
        }
      }
    } else {
      if (this.serverSize.cols !== this.term.cols || this.serverSize.rows !== this.term.rows) {
        this.term.resize(this.serverSize.cols, this.serverSize.rows);
      }
      this.shrinkToFit(this.serverSize);
    }
  }

  /**
   * Someone else's screen in a smaller box (a phone, a narrow window): a smaller font shows all
   * of it, down to a readable minimum; below that the box scrolls. Never larger than the
   * user's chosen size.
   */
  private shrinkToFit(size: Size): void {
    const dims = this.fit.proposeDimensions();
    const current = this.term.options.fontSize ?? this.preferredFontSize;
    if (!dims || !Number.isFinite(dims.cols) || dims.cols <= 0 || dims.rows <= 0) return;
    const scale = Math.min(dims.cols / size.cols, dims.rows / size.rows);
    const wanted = Math.max(MIN_FONT_SIZE, Math.min(this.preferredFontSize, Math.floor(current * scale)));
    if (wanted !== current) this.term.options.fontSize = wanted;
  }

  private renderPresence(): void {
    const iAmOwner = this.me?.role === "owner";
    const items = this.clients.map((client) => {
      const isMe = client.client === this.me?.client;
      const actions: HTMLElement[] = [];
      if (iAmOwner && !isMe && client.role === "viewer") {
        actions.push(h("button", { type: "button", class: "small", "data-action": "grant", onclick: () => this.setRole(client.client, "writer") }, "Let type"));
      }
      if (iAmOwner && !isMe && client.role === "writer") {
        actions.push(h("button", { type: "button", class: "small", "data-action": "revoke", onclick: () => this.setRole(client.client, "viewer") }, "Take back"));
      }
      if (iAmOwner && !isMe && !client.via_link && client.role !== "owner") {
        actions.push(h("button", { type: "button", class: "small", "data-action": "hand-over", onclick: () => this.setRole(client.client, "owner") }, "Make owner"));
      }
      return h(
        "li",
        { class: `person role-${client.role}`, "data-client": client.client, "data-role": client.role, title: client.via_link ? "joined with a share link" : "signed in" },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "name" }, client.name),
        isMe ? h("span", { class: "me" }, " (you)") : null,
        h("span", { class: "badge" }, client.role),
        ...actions,
      );
    });
    replace(this.presence, ...items);
  }

  private setRole(client: number, role: Role): void {
    this.send({ type: "set_role", client, role });
    this.requests.querySelector(`[data-client="${client}"]`)?.remove();
  }

  private askToType(): void {
    this.send({ type: "request_control" });
    this.askButton.disabled = true;
    this.askButton.textContent = "Asked…";
    // The server accepts one request per few seconds; the button follows.
    window.setTimeout(() => {
      this.askButton.disabled = false;
      this.askButton.textContent = "Ask to type";
    }, 5000);
  }

  /** Shows the owner a viewer's request, with the answer at hand. */
  private showRequest(client: number, name: string): void {
    this.requests.querySelector(`[data-client="${client}"]`)?.remove();
    const item = h(
      "div",
      { class: "control-request", "data-client": client },
      h("span", {}, `${name} asks to type.`),
      h("button", { type: "button", class: "small primary", "data-action": "grant-request", onclick: () => this.setRole(client, "writer") }, "Let type"),
      h("button", { type: "button", class: "small", onclick: () => item.remove() }, "Dismiss"),
    );
    this.requests.appendChild(item);
  }

  private setStatus(text: string, state: "ok" | "busy" | "ended"): void {
    this.status.textContent = text;
    this.status.dataset["state"] = state;
  }

  private showBanner(text: string, kind: "viewer" | "info" | "error"): void {
    this.banner.textContent = text;
    this.banner.dataset["kind"] = kind;
    this.banner.hidden = false;
  }

  /** Hides the banner if it shows a message of this kind (a newer message of another kind stays). */
  private hideBanner(kind: "viewer" | "error"): void {
    if (this.banner.dataset["kind"] === kind) this.banner.hidden = true;
  }

  private zoom(step: number): void {
    const size = Math.min(32, Math.max(MIN_FONT_SIZE, (this.term.options.fontSize ?? this.preferredFontSize) + step));
    this.preferredFontSize = size;
    this.term.options.fontSize = size;
    localStorage.setItem(FONT_SIZE_KEY, String(size));
    this.layout();
  }

  private share(): void {
    openShareDialog(this.endpoint.terminal);
  }

  private setStickyCtrl(on: boolean): void {
    this.stickyCtrl = on;
    this.keyRow.querySelector("[data-key=Ctrl]")?.setAttribute("aria-pressed", String(on));
  }

  private buildKeyRow(): HTMLElement {
    const keys = SPECIAL_KEY_NAMES.map((name) =>
      h(
        "button",
        {
          type: "button",
          "data-key": name,
          onclick: () => {
            this.sendBytes(encoder.encode(specialKey(name, this.term.modes.applicationCursorKeysMode)));
            this.term.focus();
          },
        },
        name,
      ),
    );
    const ctrl = h("button", { type: "button", "data-key": "Ctrl", "aria-pressed": "false", onclick: () => { this.setStickyCtrl(!this.stickyCtrl); this.term.focus(); } }, "Ctrl");
    return h("div", { class: "key-row", role: "toolbar", "aria-label": "Special keys" }, keys[0] ?? null, keys[1] ?? null, ctrl, ...keys.slice(2));
  }
}
