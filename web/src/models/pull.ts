// Pure logic of image pulls: reading a server-sent event stream from a `fetch` body (a POST,
// which `EventSource` cannot send), and the per-layer progress the events describe.

export interface SseEvent {
  event: string;
  data: string;
}

/** Incremental `text/event-stream` parser: feed it text as it arrives, get whole events. */
export class SseParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];

  feed(text: string): SseEvent[] {
    this.buffer += text;
    const events: SseEvent[] = [];
    let newline: number;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      // A lone CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (width === 1 && this.buffer[newline] === "\r" && newline === this.buffer.length - 1) break;
      this.buffer = this.buffer.slice(newline + width);
      if (line === "") {
        if (this.data.length > 0) events.push({ event: this.event || "message", data: this.data.join("\n") });
        this.event = "";
        this.data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const name = colon >= 0 ? line.slice(0, colon) : line;
        let value = colon >= 0 ? line.slice(colon + 1) : "";
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "event") this.event = value;
        else if (name === "data") this.data.push(value);
      }
    }
    return events;
  }
}

export type Phase = "waiting" | "exists" | "downloading" | "extracting" | "complete";

export interface LayerProgress {
  digest: string;
  phase: Phase;
  done: number;
  total: number;
}

/** What a pull has done so far, from its `progress`, `done` and `error` events. */
export class PullProgress {
  readonly layers = new Map<string, LayerProgress>();
  reference = "";
  imageId: string | null = null;
  error: string | null = null;

  /** Applies one event; returns false for events it does not know (ignored). */
  apply(event: SseEvent): boolean {
    let data: Record<string, unknown>;
    try {
      data = JSON.parse(event.data) as Record<string, unknown>;
    } catch {
      return false;
    }
    if (event.event === "error") {
      const error = data["error"] as { message?: unknown } | undefined;
      this.error = typeof error?.message === "string" ? error.message : "the pull failed";
      return true;
    }
    if (event.event === "done") {
      this.imageId = typeof data["image_id"] === "string" ? data["image_id"] : "";
      if (typeof data["reference"] === "string") this.reference = data["reference"];
      return true;
    }
    if (event.event !== "progress") return false;
    if (data["status"] === "resolved") {
      if (typeof data["reference"] === "string") this.reference = data["reference"];
      for (const layer of Array.isArray(data["layers"]) ? (data["layers"] as { digest?: unknown; size?: unknown }[]) : []) {
        if (typeof layer.digest !== "string") continue;
        this.layers.set(layer.digest, { digest: layer.digest, phase: "waiting", done: 0, total: typeof layer.size === "number" ? layer.size : 0 });
      }
      return true;
    }
    if (data["status"] === "layer" && typeof data["digest"] === "string") {
      const previous = this.layers.get(data["digest"]);
      const phase = (["exists", "downloading", "extracting", "complete"] as const).find((p) => p === data["phase"]) ?? previous?.phase ?? "downloading";
      const total = typeof data["total"] === "number" && data["total"] > 0 ? data["total"] : (previous?.total ?? 0);
      const done = typeof data["done"] === "number" ? data["done"] : (previous?.done ?? 0);
      this.layers.set(data["digest"], { digest: data["digest"], phase, done, total });
      return true;
    }
    return false;
  }

  /** Overall fraction in 0..1: bytes downloaded over bytes to download (existing layers count as done). */
  get fraction(): number {
    let done = 0;
    let total = 0;
    for (const layer of this.layers.values()) {
      total += layer.total;
      done += layer.phase === "exists" || layer.phase === "complete" || layer.phase === "extracting" ? layer.total : Math.min(layer.done, layer.total);
    }
    if (this.imageId !== null) return 1;
    return total > 0 ? done / total : 0;
  }
}

/**
 * The registry host of an image reference, as Docker reads it: the first path component when it
 * looks like a host (has a `.` or a `:`, or is `localhost`); null for Docker Hub's short names.
 */
export function registryOf(reference: string): string | null {
  const slash = reference.indexOf("/");
  if (slash < 0) return null;
  const first = reference.slice(0, slash);
  return first.includes(".") || first.includes(":") || first === "localhost" ? first : null;
}
