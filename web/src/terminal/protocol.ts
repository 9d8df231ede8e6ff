// The shared-terminal WebSocket protocol as the browser speaks it (docs/TERMINAL_PROTOCOL.md):
// parsing the server's control messages, the client's messages, the stream-offset bookkeeping
// behind acknowledgements and resume, and the URL a (re)connection uses. No DOM, no sockets:
// everything here is unit-tested.

export type Role = "owner" | "writer" | "viewer";

export interface Client {
  client: number;
  name: string;
  role: Role;
  via_link: boolean;
}

export interface Size {
  rows: number;
  cols: number;
}

export type ServerMessage =
  | { type: "hello"; client: number; terminal: string; role: Role; offset: number; size: Size | null; clients: Client[]; input: boolean }
  | { type: "presence"; clients: Client[] }
  | { type: "size"; rows: number; cols: number }
  | { type: "reset"; offset: number; missed: number }
  | { type: "error"; code: string; message: string }
  | { type: "exit"; code: number | null }
  | { type: "closed"; reason: string }
  | { type: "control_request"; client: number; name: string };

export type ClientMessage =
  | { type: "ack"; offset: number }
  | { type: "resize"; rows: number; cols: number }
  | { type: "set_role"; client: number; role: Role }
  | { type: "request_control" };

const ROLES: readonly Role[] = ["owner", "writer", "viewer"];

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function num(record: Record<string, unknown>, key: string): number {
  const value = record[key];
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new Error(`"${key}" must be a number`);
  }
  return value;
}

function str(record: Record<string, unknown>, key: string): string {
  const value = record[key];
  if (typeof value !== "string") {
    throw new Error(`"${key}" must be a string`);
  }
  return value;
}

function role(record: Record<string, unknown>, key: string): Role {
  const value = str(record, key);
  if (!(ROLES as readonly string[]).includes(value)) {
    throw new Error(`"${key}" is not a role: ${value}`);
  }
  return value as Role;
}

function size(value: unknown): Size | null {
  if (value === null || value === undefined) return null;
  if (!isRecord(value)) throw new Error("size must be an object");
  return { rows: num(value, "rows"), cols: num(value, "cols") };
}

function clients(value: unknown): Client[] {
  if (!Array.isArray(value)) throw new Error('"clients" must be a list');
  return value.map((entry) => {
    if (!isRecord(entry)) throw new Error("a client must be an object");
    return { client: num(entry, "client"), name: str(entry, "name"), role: role(entry, "role"), via_link: entry["via_link"] === true };
  });
}

/** Parses one text frame from the server; throws (with the reason) on anything malformed. */
export function parseServerMessage(text: string): ServerMessage {
  const value: unknown = JSON.parse(text);
  if (!isRecord(value)) throw new Error("control message is not an object");
  const type = str(value, "type");
  switch (type) {
    case "hello":
      return {
        type,
        client: num(value, "client"),
        terminal: str(value, "terminal"),
        role: role(value, "role"),
        offset: num(value, "offset"),
        size: size(value["size"]),
        clients: clients(value["clients"]),
        input: value["input"] !== false,
      };
    case "presence":
      return { type, clients: clients(value["clients"]) };
    case "size":
      return { type, rows: num(value, "rows"), cols: num(value, "cols") };
    case "reset":
      return { type, offset: num(value, "offset"), missed: num(value, "missed") };
    case "error":
      return { type, code: str(value, "code"), message: str(value, "message") };
    case "exit":
      return { type, code: typeof value["code"] === "number" ? value["code"] : null };
    case "closed":
      return { type, reason: str(value, "reason") };
    case "control_request":
      return { type, client: num(value, "client"), name: str(value, "name") };
    default:
      throw new Error(`unknown control message type "${type}"`);
  }
}

export function encodeClientMessage(message: ClientMessage): string {
  return JSON.stringify(message);
}

/** A piece of output handed to the renderer, to be reported back once it is drawn. */
export interface Written {
  /** Which stream epoch the bytes belong to; a `reset` starts a new one. */
  readonly epoch: number;
  /** Stream offset just after the last byte of the piece. */
  readonly end: number;
}

/**
 * Offset bookkeeping and acknowledgement batching for one terminal stream.
 *
 * `received` is the offset after the last byte that arrived (what a reconnect resumes from: the
 * bytes are already queued in the renderer). `drawn` is the offset after the last byte the
 * renderer finished. Acks are sent for drawn bytes only, so the server's window (1 MiB) bounds
 * what waits in the renderer; they are batched while output floods in (one per `ackStep` bytes)
 * and sent at once when the renderer has caught up, so interactive echo is never held back.
 */
export class FlowControl {
  private epoch = 0;
  private receivedOffset: number;
  private drawnOffset: number;
  private ackedOffset: number;

  constructor(
    start = 0,
    private readonly ackStep = 128 * 1024,
  ) {
    this.receivedOffset = start;
    this.drawnOffset = start;
    this.ackedOffset = start;
  }

  get received(): number {
    return this.receivedOffset;
  }

  get drawn(): number {
    return this.drawnOffset;
  }

  get acked(): number {
    return this.ackedOffset;
  }

  /** The server says the bytes that follow start at `offset` (hello or reset). */
  restart(offset: number): void {
    this.epoch += 1;
    this.receivedOffset = offset;
    this.drawnOffset = offset;
    this.ackedOffset = offset;
  }

  /** `length` bytes arrived; returns the token to pass to {@link rendered} once drawn. */
  receive(length: number): Written {
    this.receivedOffset += length;
    return { epoch: this.epoch, end: this.receivedOffset };
  }

  /**
   * The renderer drew a piece. Returns the offset to acknowledge now, or null to wait for more.
   * Pieces from before a reset are ignored: their offsets belong to a stream that was dropped.
   */
  rendered(piece: Written): number | null {
    if (piece.epoch !== this.epoch || piece.end <= this.drawnOffset) return null;
    this.drawnOffset = piece.end;
    const caughtUp = this.drawnOffset === this.receivedOffset;
    if (caughtUp || this.drawnOffset - this.ackedOffset >= this.ackStep) {
      this.ackedOffset = this.drawnOffset;
      return this.ackedOffset;
    }
    return null;
  }
}

/** Where a terminal client connects: the page's origin, the terminal, and how it is let in. */
export interface Endpoint {
  /** `location.origin`, e.g. `https://porthole.example:8080`. */
  origin: string;
  terminal: string;
  /** A share link's secret, for guests. */
  link?: string | undefined;
  /** The name others see for a guest. */
  name?: string | undefined;
}

/** The WebSocket URL; with `offset`, a resume that gets exactly the bytes from there on. */
export function socketUrl(endpoint: Endpoint, offset?: number): string {
  const url = new URL(`/api/terminals/${encodeURIComponent(endpoint.terminal)}/ws`, endpoint.origin);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (offset !== undefined) url.searchParams.set("offset", String(offset));
  if (endpoint.link) url.searchParams.set("link", endpoint.link);
  if (endpoint.link && endpoint.name) url.searchParams.set("name", endpoint.name);
  return url.toString();
}

/** Delay before reconnect attempt `attempt` (1-based): quick at first, then at most 10 s. */
export function reconnectDelay(attempt: number): number {
  return Math.min(10_000, 250 * 2 ** Math.max(0, attempt - 1));
}

/** Whether a role may type. */
export function canType(role: Role): boolean {
  return role === "owner" || role === "writer";
}

/**
 * What sticky Ctrl (the touch key row) turns typed data into: a letter or one of `@[\]^_ ?`
 * becomes its control character; anything else passes unchanged.
 */
export function withCtrl(data: string): string {
  if (data.length !== 1) return data;
  const code = data.toUpperCase().charCodeAt(0);
  if (code >= 0x40 && code <= 0x5f) return String.fromCharCode(code - 0x40);
  if (data === " ") return "\x00";
  if (data === "?") return "\x7f";
  return data;
}

/** Bytes the special keys of the touch key row send (in the normal cursor mode). */
const SPECIAL_KEYS: Readonly<Record<string, string>> = {
  Esc: "\x1b",
  Tab: "\t",
  "↑": "\x1b[A",
  "↓": "\x1b[B",
  "→": "\x1b[C",
  "←": "\x1b[D",
  Home: "\x1b[H",
  End: "\x1b[F",
};

export const SPECIAL_KEY_NAMES: readonly string[] = Object.keys(SPECIAL_KEYS);

/**
 * The bytes for a special key. Full-screen programs (vi, less) switch the terminal to
 * application cursor mode, where arrows and Home/End are sent as `ESC O x` instead of `ESC [ x`.
 */
export function specialKey(name: string, applicationCursor: boolean): string {
  const bytes = SPECIAL_KEYS[name];
  if (bytes === undefined) throw new Error(`no special key "${name}"`);
  return applicationCursor && bytes.startsWith("\x1b[") ? `\x1bO${bytes.slice(2)}` : bytes;
}
