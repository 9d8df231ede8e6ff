// Pure logic of the logs view: decoding the log WebSocket's frames, assembling lines per stream
// (records are chunks, not lines, and a UTF-8 character may be split between them), making
// terminal output readable, and splitting text around search matches for highlighting.

export type Stream = "stdout" | "stderr";

export interface LogFrame {
  stream: Stream;
  /** Nanoseconds since the epoch. */
  timeNs: bigint;
  data: Uint8Array;
}

/** `[stream u8 (1 stdout, 2 stderr)][time i64 ns big-endian][bytes]`. */
export function decodeLogFrame(buffer: ArrayBuffer): LogFrame {
  if (buffer.byteLength < 9) throw new Error(`log frame of ${buffer.byteLength} bytes is too short`);
  const view = new DataView(buffer);
  const tag = view.getUint8(0);
  if (tag !== 1 && tag !== 2) throw new Error(`unknown log stream ${tag}`);
  return { stream: tag === 1 ? "stdout" : "stderr", timeNs: view.getBigInt64(1), data: new Uint8Array(buffer, 9) };
}

export interface LogLine {
  stream: Stream;
  /** Milliseconds since the epoch, of the record that completed the line. */
  time: number;
  text: string;
}

// CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), and two-byte escapes.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

/** Terminal output made readable as text: escape sequences removed, a trailing CR dropped. */
export function plainText(line: string): string {
  let text = line.replace(ESCAPES, "");
  if (text.endsWith("\r")) text = text.slice(0, -1);
  // A carriage return inside a line redraws it (progress bars): what remains visible is the last part.
  const lastCr = text.lastIndexOf("\r");
  return lastCr >= 0 ? text.slice(lastCr + 1) : text;
}

/** Turns records into lines, per stream; an unfinished line waits for the rest. */
export class LineAssembler {
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  private readonly partial = { stdout: "", stderr: "" };

  push(frame: LogFrame): LogLine[] {
    const time = Number(frame.timeNs / 1_000_000n);
    const text = this.partial[frame.stream] + this.decoders[frame.stream].decode(frame.data, { stream: true });
    const pieces = text.split("\n");
    this.partial[frame.stream] = pieces.pop() ?? "";
    return pieces.map((piece) => ({ stream: frame.stream, time, text: plainText(piece) }));
  }

  /** The unfinished lines, when the stream ended. */
  flush(time: number): LogLine[] {
    const lines: LogLine[] = [];
    for (const stream of ["stdout", "stderr"] as const) {
      const rest = this.partial[stream] + this.decoders[stream].decode();
      this.partial[stream] = "";
      if (rest) lines.push({ stream, time, text: plainText(rest) });
    }
    return lines;
  }
}

export interface Segment {
  text: string;
  match: boolean;
}

/** `text` cut into pieces that match `query` (case-insensitive) and pieces that do not. */
export function highlight(text: string, query: string): Segment[] {
  if (!query) return [{ text, match: false }];
  const lower = text.toLowerCase();
  const needle = query.toLowerCase();
  const segments: Segment[] = [];
  let from = 0;
  for (let at = lower.indexOf(needle); at >= 0; at = lower.indexOf(needle, at + needle.length)) {
    if (at > from) segments.push({ text: text.slice(from, at), match: false });
    segments.push({ text: text.slice(at, at + needle.length), match: true });
    from = at + needle.length;
  }
  if (from < text.length || segments.length === 0) segments.push({ text: text.slice(from), match: false });
  return segments;
}

/** The log as a text file: `time stream text` per line (RFC 3339 times), as `docker logs -t`. */
export function logsAsText(lines: readonly LogLine[], timestamps: boolean): string {
  return lines.map((l) => (timestamps ? `${new Date(l.time).toISOString()} ${l.stream} ${l.text}` : l.text)).join("\n") + (lines.length ? "\n" : "");
}
