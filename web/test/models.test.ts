import { test } from "node:test";
import assert from "node:assert/strict";
import { errorFromBody } from "../src/api.ts";
import type { ContainerSummary, Stats } from "../src/api.ts";
import { formatBytes, formatDuration, parseSize, shortId } from "../src/format.ts";
import { cpuPercent, describeState, matchesFilter, sortContainers } from "../src/models/containers.ts";
import { buildConfig, DEFAULT_LAUNCH, FieldError, parseEnv, parseMounts, splitCommand } from "../src/models/launch.ts";
import { decodeLogFrame, highlight, LineAssembler, logsAsText, plainText } from "../src/models/logs.ts";
import { polylinePoints, Series } from "../src/models/chart.ts";
import { PullProgress, registryOf, SseParser } from "../src/models/pull.ts";

const NOW = Date.parse("2025-01-01T12:00:00Z");

function container(overrides: Partial<ContainerSummary> & { status?: ContainerSummary["state"]["status"] } = {}): ContainerSummary {
  const { status = "running", ...rest } = overrides;
  return {
    id: "3f2a9c0d1e4b5a6978",
    name: "eager_turing",
    image: "busybox:latest",
    image_id: "sha256:abc",
    command: ["sh", "-c", "echo hi"],
    created: "2025-01-01T11:00:00Z",
    state: { status, pid: 1, exit_code: status === "exited" ? 137 : null, oom_killed: false, error: null, started_at: "2025-01-01T11:55:00Z", finished_at: "2025-01-01T11:58:00Z", restart_count: 0 },
    labels: { team: "infra" },
    ...rest,
  };
}

test("states read as docker ps shows them", () => {
  assert.equal(describeState(container().state, NOW), "Up 5 minutes");
  assert.equal(describeState(container({ status: "exited" }).state, NOW), "Exited (137) 2 minutes ago");
  assert.equal(describeState({ ...container().state, status: "created", error: "no such command" }, NOW), "Created; start failed: no such command");
});

test("search matches name, image, command, labels and id prefix; the filter splits running from stopped", () => {
  const c = container();
  for (const query of ["eager", "BUSYBOX", "echo hi", "team=infra", "3f2a9c", "eager busybox", ""]) {
    assert.ok(matchesFilter(c, query, "all"), query);
  }
  assert.ok(!matchesFilter(c, "nginx", "all"));
  assert.ok(!matchesFilter(c, "", "stopped"));
  assert.ok(matchesFilter(container({ status: "exited" }), "", "stopped"));
  const sorted = sortContainers([container({ id: "a", status: "exited", created: "2025-01-01T11:59:00Z" }), container({ id: "b" }), container({ id: "c", created: "2025-01-01T11:30:00Z" })]);
  assert.deepEqual(sorted.map((x) => x.id), ["c", "b", "a"]);
});

test("CPU percent is CPU time over wall time between two readings", () => {
  const base: Stats = { read_at: "2025-01-01T12:00:00.000Z", cpu_total_ns: 1_000_000_000, online_cpus: 4, memory_bytes: 1, memory_limit_bytes: null, pids: 1, pids_limit: null };
  const later = { ...base, read_at: "2025-01-01T12:00:02.000Z", cpu_total_ns: 2_000_000_000 };
  assert.equal(cpuPercent(base, later), 50);
  assert.equal(cpuPercent(undefined, later), null);
  assert.equal(cpuPercent(later, base), null);
});

test("formats sizes, durations and ids", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1536), "1.50 KiB");
  assert.equal(formatBytes(5 * 1024 ** 3), "5.00 GiB");
  assert.equal(formatDuration(61_000), "1 minute");
  assert.equal(formatDuration(3 * 86_400_000), "3 days");
  assert.equal(shortId("sha256:0123456789abcdef"), "0123456789ab");
  assert.equal(parseSize("512m"), 512 * 1024 ** 2);
  assert.equal(parseSize("1.5GiB"), 1.5 * 1024 ** 3);
  assert.equal(parseSize("4096"), 4096);
  assert.throws(() => parseSize("lots"), /not a size/);
});

test("server errors become their message", () => {
  const error = errorFromBody(409, '{"error":{"kind":"conflict","message":"container name web is in use"}}');
  assert.equal(error.message, "container name web is in use");
  assert.equal(error.kind, "conflict");
  assert.equal(errorFromBody(502, "<html>Bad gateway</html>").message, "the server answered 502: <html>Bad gateway</html>");
  assert.equal(errorFromBody(500, "").message, "the server answered 500");
});

test("command lines split like a shell's, without expansion", () => {
  assert.deepEqual(splitCommand("sh"), ["sh"]);
  assert.deepEqual(splitCommand(`sh -c 'echo "hi there"; ls $HOME'`), ["sh", "-c", 'echo "hi there"; ls $HOME']);
  assert.deepEqual(splitCommand(`echo "a \\"b\\"" c\\ d ''`), ["echo", 'a "b"', "c d", ""]);
  assert.deepEqual(splitCommand("  "), []);
  assert.throws(() => splitCommand("echo 'oops"), /unclosed single quote/);
});

test("mounts and environment lines", () => {
  assert.deepEqual(parseMounts("/srv/data:/data:ro\ncache:/cache\ntmpfs:/tmp:64m\n"), [
    { type: "bind", source: "/srv/data", target: "/data", read_only: true },
    { type: "volume", name: "cache", target: "/cache", read_only: false },
    { type: "tmpfs", target: "/tmp", size_bytes: 64 * 1024 ** 2 },
  ]);
  assert.throws(() => parseMounts("/srv:data"), /not source:\/target/);
  assert.throws(() => parseMounts("/a:/b:rx"), /ro or rw/);
  assert.deepEqual(parseEnv("A=1\n# comment\n\nB=x=y"), ["A=1", "B=x=y"]);
  assert.throws(() => parseEnv("NOVALUE"), /not KEY=value/);
});

test("the default form runs a shell in busybox with a terminal", () => {
  assert.deepEqual(buildConfig(DEFAULT_LAUNCH), { image: "busybox:latest", tty: true, open_stdin: true, cmd: ["sh"] });
});

test("a full form becomes the API's container config; mistakes name their field", () => {
  const config = buildConfig({
    ...DEFAULT_LAUNCH,
    name: "web-1",
    command: "httpd -f -p 8080",
    env: "PORT=8080",
    user: "nobody",
    workingDir: "/srv",
    memory: "256m",
    cpus: "0.5",
    pids: "64",
    restart: "on-failure",
    maxRetries: "3",
    mounts: "www:/srv",
    network: "host",
    autoRemove: true,
  });
  assert.deepEqual(config, {
    image: "busybox:latest",
    tty: true,
    open_stdin: true,
    name: "web-1",
    cmd: ["httpd", "-f", "-p", "8080"],
    env: ["PORT=8080"],
    user: "nobody",
    working_dir: "/srv",
    resources: { memory_bytes: 256 * 1024 ** 2, cpu_millis: 500, pids_limit: 64 },
    restart_policy: { name: "on-failure", max_retries: 3 },
    mounts: [{ type: "volume", name: "www", target: "/srv", read_only: false }],
    network_mode: "host",
    auto_remove: true,
  });
  const fieldOf = (form: Partial<typeof DEFAULT_LAUNCH>) => {
    try {
      buildConfig({ ...DEFAULT_LAUNCH, ...form });
    } catch (error) {
      assert.ok(error instanceof FieldError);
      return error.field;
    }
    return null;
  };
  assert.equal(fieldOf({ image: " " }), "image");
  assert.equal(fieldOf({ name: "bad name" }), "name");
  assert.equal(fieldOf({ memory: "huge" }), "memory");
  assert.equal(fieldOf({ cpus: "-1" }), "cpus");
  assert.equal(fieldOf({ command: "echo 'x" }), "command");
  assert.equal(fieldOf({ workingDir: "relative" }), "workingDir");
});

function frame(stream: 1 | 2, ms: number, text: string | Uint8Array): ArrayBuffer {
  const bytes = typeof text === "string" ? new TextEncoder().encode(text) : text;
  const buffer = new ArrayBuffer(9 + bytes.length);
  const view = new DataView(buffer);
  view.setUint8(0, stream);
  view.setBigInt64(1, BigInt(ms) * 1_000_000n);
  new Uint8Array(buffer, 9).set(bytes);
  return buffer;
}

test("log frames decode to stream, time and bytes", () => {
  const decoded = decodeLogFrame(frame(2, 1_700_000_000_123, "oops\n"));
  assert.equal(decoded.stream, "stderr");
  assert.equal(decoded.timeNs, 1_700_000_000_123_000_000n);
  assert.equal(new TextDecoder().decode(decoded.data), "oops\n");
  assert.throws(() => decodeLogFrame(new ArrayBuffer(3)), /too short/);
  const unknown = frame(1, 0, "x");
  new DataView(unknown).setUint8(0, 9);
  assert.throws(() => decodeLogFrame(unknown), /unknown log stream 9/);
});

test("lines are assembled per stream, across records and split UTF-8 characters", () => {
  const assembler = new LineAssembler();
  const euro = new TextEncoder().encode("price: 5€\n");
  const cut = euro.length - 3; // inside the three bytes of €
  assert.deepEqual(assembler.push(decodeLogFrame(frame(1, 1000, euro.slice(0, cut)))), []);
  assert.deepEqual(assembler.push(decodeLogFrame(frame(2, 1500, "err one\nerr"))), [{ stream: "stderr", time: 1500, text: "err one" }]);
  assert.deepEqual(assembler.push(decodeLogFrame(frame(1, 2000, euro.slice(cut)))), [{ stream: "stdout", time: 2000, text: "price: 5€" }]);
  assert.deepEqual(assembler.flush(3000), [{ stream: "stderr", time: 3000, text: "err" }]);
});

test("terminal output is made readable and searchable", () => {
  assert.equal(plainText("\x1b[1;32mgreen\x1b[0m done\r"), "green done");
  assert.equal(plainText("\x1b]0;title\x07prompt$ "), "prompt$ ");
  assert.equal(plainText("10%\r50%\r100%"), "100%");
  assert.deepEqual(highlight("Error: disk error", "error"), [
    { text: "Error", match: true },
    { text: ": disk ", match: false },
    { text: "error", match: true },
  ]);
  assert.deepEqual(highlight("nothing", "x"), [{ text: "nothing", match: false }]);
  assert.deepEqual(highlight("abc", ""), [{ text: "abc", match: false }]);
  assert.equal(logsAsText([{ stream: "stdout", time: 0, text: "a" }], true), "1970-01-01T00:00:00.000Z stdout a\n");
  assert.equal(logsAsText([{ stream: "stdout", time: 0, text: "a" }, { stream: "stderr", time: 0, text: "b" }], false), "a\nb\n");
});

test("chart series keep the newest values and scale into the box", () => {
  const series = new Series(3);
  [1, 2, 3, 4].forEach((v) => series.push(v));
  assert.deepEqual(series.points, [2, 3, 4]);
  assert.equal(polylinePoints([0, 50, 100], 3, 200, 100, 100), "0,100 100,50 200,0");
  // Fewer values than slots are right-aligned; a value above the max raises the scale.
  assert.equal(polylinePoints([200], 3, 200, 100, 100), "200,0");
  assert.equal(polylinePoints([], 3, 200, 100, 100), "");
});

test("server-sent events parse across arbitrary chunk boundaries", () => {
  const stream = 'event: progress\ndata: {"a":1}\n\n: keep-alive\n\nevent: done\r\ndata: {"b":\r\ndata: 2}\r\n\r\n';
  for (let cut = 0; cut <= stream.length; cut++) {
    const parser = new SseParser();
    const events = [...parser.feed(stream.slice(0, cut)), ...parser.feed(stream.slice(cut))];
    assert.deepEqual(events, [
      { event: "progress", data: '{"a":1}' },
      { event: "done", data: '{"b":\n2}' },
    ], `cut at ${cut}`);
  }
});

test("pull progress follows layers from resolved to done", () => {
  const progress = new PullProgress();
  const event = (name: string, data: unknown) => progress.apply({ event: name, data: JSON.stringify(data) });
  event("progress", { status: "resolved", reference: "reg:5000/app:1", manifest_digest: "sha256:m", layers: [{ digest: "sha256:a", size: 100 }, { digest: "sha256:b", size: 300 }] });
  assert.equal(progress.fraction, 0);
  event("progress", { status: "layer", digest: "sha256:a", phase: "exists", done: 0, total: 100 });
  event("progress", { status: "layer", digest: "sha256:b", phase: "downloading", done: 150, total: 300 });
  assert.equal(progress.fraction, 250 / 400);
  assert.equal(progress.layers.get("sha256:b")?.phase, "downloading");
  event("progress", { status: "layer", digest: "sha256:b", phase: "complete", done: 300, total: 300 });
  assert.equal(progress.fraction, 1);
  assert.equal(progress.imageId, null);
  event("done", { status: "done", reference: "reg:5000/app:1", image_id: "sha256:img" });
  assert.equal(progress.imageId, "sha256:img");
  assert.equal(progress.reference, "reg:5000/app:1");

  const failed = new PullProgress();
  failed.apply({ event: "error", data: '{"error":{"kind":"not_found","message":"manifest unknown"}}' });
  assert.equal(failed.error, "manifest unknown");
  assert.equal(failed.apply({ event: "progress", data: "not json" }), false);
});

test("the registry of a reference is read as Docker reads it", () => {
  assert.equal(registryOf("127.0.0.1:5000/team/app:v1"), "127.0.0.1:5000");
  assert.equal(registryOf("registry.local/app"), "registry.local");
  assert.equal(registryOf("localhost/app:1"), "localhost");
  assert.equal(registryOf("library/busybox"), null);
  assert.equal(registryOf("busybox:latest"), null);
});
