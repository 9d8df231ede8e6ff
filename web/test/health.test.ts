import { test } from "node:test";
import assert from "node:assert/strict";
import { describeHealth, parseHealth } from "../src/health.ts";

test("parses a health report", () => {
  const health = parseHealth({ status: "ok", version: "0.1.0", engine: "native" });
  assert.equal(describeHealth(health), "Porthole 0.1.0 — running, engine: native");
});

test("rejects a report with a missing field, naming it", () => {
  assert.throws(() => parseHealth({ status: "ok", version: "0.1.0" }), /"engine"/);
  assert.throws(() => parseHealth("ok"), /not an object/);
});

test("describes an unhealthy server", () => {
  const health = parseHealth({ status: "degraded", version: "0.1.0", engine: "native" });
  assert.match(describeHealth(health), /unhealthy \(degraded\)/);
});
