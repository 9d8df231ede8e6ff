import { test } from "node:test";
import assert from "node:assert/strict";
import { canType, encodeClientMessage, FlowControl, parseServerMessage, reconnectDelay, socketUrl, specialKey, withCtrl } from "../src/terminal/protocol.ts";

test("parses every server control message", () => {
  const hello = parseServerMessage(
    JSON.stringify({ type: "hello", client: 3, terminal: "t1", role: "viewer", offset: 120, size: { rows: 24, cols: 80 }, clients: [{ client: 3, name: "guest", role: "viewer", via_link: true }], input: true }),
  );
  assert.deepEqual(hello, { type: "hello", client: 3, terminal: "t1", role: "viewer", offset: 120, size: { rows: 24, cols: 80 }, clients: [{ client: 3, name: "guest", role: "viewer", via_link: true }], input: true });
  assert.deepEqual(parseServerMessage('{"type":"hello","client":1,"terminal":"t","role":"owner","offset":0,"size":null,"clients":[],"input":false}').type, "hello");
  assert.deepEqual(parseServerMessage('{"type":"reset","offset":5,"missed":2}'), { type: "reset", offset: 5, missed: 2 });
  assert.deepEqual(parseServerMessage('{"type":"size","rows":30,"cols":100}'), { type: "size", rows: 30, cols: 100 });
  assert.deepEqual(parseServerMessage('{"type":"exit","code":null}'), { type: "exit", code: null });
  assert.deepEqual(parseServerMessage('{"type":"exit","code":2}'), { type: "exit", code: 2 });
  assert.deepEqual(parseServerMessage('{"type":"closed","reason":"revoked"}'), { type: "closed", reason: "revoked" });
  assert.deepEqual(parseServerMessage('{"type":"control_request","client":4,"name":"Ada"}'), { type: "control_request", client: 4, name: "Ada" });
  assert.deepEqual(parseServerMessage('{"type":"error","code":"forbidden","message":"viewers cannot type"}'), { type: "error", code: "forbidden", message: "viewers cannot type" });
  assert.deepEqual(parseServerMessage('{"type":"presence","clients":[{"client":1,"name":"admin","role":"owner","via_link":false}]}'), {
    type: "presence",
    clients: [{ client: 1, name: "admin", role: "owner", via_link: false }],
  });
});

test("refuses malformed control messages, saying why", () => {
  assert.throws(() => parseServerMessage('{"type":"teleport"}'), /unknown control message type "teleport"/);
  assert.throws(() => parseServerMessage('{"type":"reset","offset":"5","missed":0}'), /"offset" must be a number/);
  assert.throws(() => parseServerMessage('{"type":"presence","clients":[{"client":1,"name":"x","role":"god"}]}'), /not a role: god/);
  assert.throws(() => parseServerMessage("[1]"), /not an object/);
});

test("client messages are the JSON the server expects", () => {
  assert.equal(encodeClientMessage({ type: "ack", offset: 42 }), '{"type":"ack","offset":42}');
  assert.equal(encodeClientMessage({ type: "set_role", client: 7, role: "writer" }), '{"type":"set_role","client":7,"role":"writer"}');
  assert.equal(encodeClientMessage({ type: "resize", rows: 24, cols: 80 }), '{"type":"resize","rows":24,"cols":80}');
  assert.equal(encodeClientMessage({ type: "request_control" }), '{"type":"request_control"}');
});

test("offsets count from hello: received tracks arrivals, drawn tracks the renderer", () => {
  const flow = new FlowControl(0, 1000);
  flow.restart(500);
  const a = flow.receive(100);
  const b = flow.receive(50);
  assert.deepEqual([a.end, b.end], [600, 650]);
  assert.equal(flow.received, 650);
  assert.equal(flow.drawn, 500);
  // The renderer has not caught up and less than a step is drawn: no ack yet.
  assert.equal(flow.rendered(a), null);
  assert.equal(flow.drawn, 600);
  // Caught up: everything drawn is acknowledged at once (interactive echo is never held back).
  assert.equal(flow.rendered(b), 650);
  assert.equal(flow.acked, 650);
});

test("acks are batched while output floods in, one per step", () => {
  const flow = new FlowControl(0, 64 * 1024);
  const pieces = Array.from({ length: 40 }, () => flow.receive(8 * 1024));
  const acks = pieces.map((p) => flow.rendered(p)).filter((a): a is number => a !== null);
  // 320 KiB in 8 KiB pieces: an ack every 64 KiB, the last when caught up.
  assert.deepEqual(acks, [65536, 131072, 196608, 262144, 327680]);
  // Never more than one step of drawn bytes goes unacknowledged, far inside the 1 MiB window.
  assert.ok(acks.every((ack, i) => i === 0 || ack - (acks[i - 1] as number) <= 64 * 1024));
});

test("a reset drops the old stream: its late draws are not acknowledged", () => {
  const flow = new FlowControl(0, 1 << 20);
  const old = flow.receive(4096);
  flow.restart(10_000);
  assert.equal(flow.rendered(old), null, "bytes from before the reset must not move the offsets");
  assert.equal(flow.drawn, 10_000);
  assert.equal(flow.received, 10_000);
  const fresh = flow.receive(10);
  assert.equal(flow.rendered(fresh), 10_010);
});

test("out-of-order or repeated draw reports never move the offset back", () => {
  const flow = new FlowControl(0, 1);
  const a = flow.receive(5);
  const b = flow.receive(5);
  assert.equal(flow.rendered(b), 10);
  assert.equal(flow.rendered(a), null);
  assert.equal(flow.drawn, 10);
});

test("the socket URL resumes from an offset and carries a share link and guest name", () => {
  const endpoint = { origin: "https://ph.example:8443", terminal: "abc123" };
  assert.equal(socketUrl(endpoint), "wss://ph.example:8443/api/terminals/abc123/ws");
  assert.equal(socketUrl({ origin: "http://10.0.0.5:8080", terminal: "abc123" }, 4096), "ws://10.0.0.5:8080/api/terminals/abc123/ws?offset=4096");
  const guest = socketUrl({ ...endpoint, link: "phl_s3cret", name: "Ada L" }, 0);
  assert.equal(guest, "wss://ph.example:8443/api/terminals/abc123/ws?offset=0&link=phl_s3cret&name=Ada+L");
  // A name without a link means nothing to the server and is not sent.
  assert.equal(socketUrl({ ...endpoint, name: "x" }), "wss://ph.example:8443/api/terminals/abc123/ws");
  assert.equal(socketUrl({ ...endpoint, terminal: "a/b" }), "wss://ph.example:8443/api/terminals/a%2Fb/ws");
});

test("reconnects back off from a quarter second to ten seconds", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 20].map(reconnectDelay), [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
});

test("roles that may type", () => {
  assert.equal(canType("owner"), true);
  assert.equal(canType("writer"), true);
  assert.equal(canType("viewer"), false);
});

test("sticky Ctrl makes control characters; special keys follow the cursor mode", () => {
  assert.equal(withCtrl("c"), "\x03");
  assert.equal(withCtrl("C"), "\x03");
  assert.equal(withCtrl("["), "\x1b");
  assert.equal(withCtrl(" "), "\x00");
  assert.equal(withCtrl("1"), "1");
  assert.equal(withCtrl("ab"), "ab");
  assert.equal(specialKey("Esc", false), "\x1b");
  assert.equal(specialKey("↑", false), "\x1b[A");
  assert.equal(specialKey("↑", true), "\x1bOA");
  assert.equal(specialKey("Tab", true), "\t");
  assert.throws(() => specialKey("F13", false), /no special key/);
});
