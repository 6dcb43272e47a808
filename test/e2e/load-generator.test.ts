/**
 * The benchmark generator (bench/load) against a real Parley over TLS: tiny versions of S3, S4 and
 * S5, so a change that breaks the generator — or the server paths it measures — fails in CI rather
 * than in the next comparison run.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import type { Target } from "../../bench/load/targets.js";
import { s3, s4, s5 } from "../../bench/load/scenarios.js";

describe("load generator against Parley", () => {
  let server: TestServer;
  let target: Target;
  before(async () => {
    server = await startTestServer({ limits: { maxConnectionsPerAddress: 1000 } });
    target = {
      name: "parley", version: "test", mucDomain: "conference.localhost", pid: process.pid, async stop() {},
      endpoint: { host: "127.0.0.1", port: server.ports.c2sDirectTls!, domain: "localhost", tls: "direct", sasl: "scram-sha-1" },
    };
  });
  after(() => server.cleanup());

  it("S3: pairs exchange messages, none lost, latency recorded", async () => {
    const r = await s3(target, { users: 20, rates: [200], durationSeconds: 1, register: true, prefix: "t3" });
    const [step] = (r.detail as { steps: { sent: number; received: number; lost: number; latency: { count: number; p50ms: number } }[] }).steps;
    assert.equal(step!.sent, 200);
    assert.equal(step!.received, 200);
    assert.equal(step!.lost, 0);
    assert.equal(step!.latency.count, 200);
    assert.ok(step!.latency.p50ms > 0);
  });

  it("S4: messages to offline users are acked (XEP-0198), then drained at login", async () => {
    const r = await s4(target, { users: 10, rates: [100], durationSeconds: 1, register: true, prefix: "t4" });
    const [step] = (r.detail as { steps: { acked: number; drain: { delivered: number } }[] }).steps;
    assert.equal(step!.acked, 100);
    assert.equal(step!.drain.delivered, 100);
  });

  it("S5 over STARTTLS: every occupant gets every room message", async () => {
    const starttls: Target = { ...target, endpoint: { ...target.endpoint, port: server.ports.c2s!, tls: "starttls" } };
    const r = await s5(starttls, { users: 12, rates: [10], durationSeconds: 1, register: true, prefix: "t5" });
    const [step] = (r.detail as { steps: { expected: number; received: number }[] }).steps;
    assert.equal(step!.expected, 10 * 12);
    assert.equal(step!.received, 10 * 12);
    assert.ok(r.headline.joinSeconds! > 0);
  });
});
