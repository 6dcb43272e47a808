/**
 * The benchmark generator (bench/load) against a real Parley over TLS: tiny versions of S3, S4, S5,
 * S8 (TCP and WebSocket users on one server) and S7 (the login paths: classic, SASL2 + Bind 2, FAST, FAST with inline resumption), so a change that breaks the generator — or the server paths it measures — fails in CI rather
 * than in the next comparison run.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import type { Target } from "../../bench/load/targets.js";
import { s2, s3, s4, s5 } from "../../bench/load/scenarios.js";
import { PATHS, s7 } from "../../bench/load/login-paths.js";
import { s8 } from "../../bench/load/websocket.js";

describe("load generator against Parley", () => {
  let server: TestServer;
  let target: Target;
  before(async () => {
    server = await startTestServer({ limits: { maxConnectionsPerAddress: 1000 } });
    target = {
      name: "parley", version: "test", mucDomain: "conference.localhost", pid: process.pid, async stop() {},
      endpoint: { host: "127.0.0.1", port: server.ports.c2sDirectTls!, domain: "localhost", tls: "direct", sasl: "scram-sha-1" },
      ports: { starttls: server.ports.c2s!, direct: server.ports.c2sDirectTls! },
      websocketPort: server.ports.https!,
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

  it("S8: steps alternate between the TCP and the WebSocket users, each delivering every message", async () => {
    const r = await s8(target, { users: 20, rates: [100], durationSeconds: 1, rounds: 1, register: true, prefix: "t8" });
    const steps = (r.detail as { steps: Record<string, { sent: number; received: number; lost: number }[]> }).steps;
    for (const transport of ["tcp", "websocket"]) {
      const [step] = steps[transport]!;
      assert.equal(step!.sent, 100, transport);
      assert.equal(step!.received, 100, transport);
      assert.equal(step!.lost, 0, transport);
    }
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

  it("S2 with FAST and --tls-resume: every storm login resumes the device's TLS session from the warm-up", async () => {
    const r = await s2(target, { login: "fast", resumeTls: true, users: 5, rates: [10], durationSeconds: 1, register: true, prefix: "t2" });
    const [step] = (r.detail as { resumeTls: boolean; steps: { completed: number; failures: number; tlsResumed: number }[] }).steps;
    assert.equal(step!.failures, 0);
    assert.equal(step!.completed, 10);
    // 10 devices (two per account), each logged in once in the warm-up with a full handshake.
    assert.equal(step!.tlsResumed, 10);
  });

  it("S7: every login path gets its waiting message, in the round trips the protocol needs; the FAST storm logs in", async () => {
    const r = await s7(target, { logins: 3, users: 5, rates: [10], durationSeconds: 1, register: true, prefix: "t7" });
    type Path = { path: string; failures: number; firstError?: string; roundTrips: number[]; outcomes: { resumed: number; bound: number }; tlsResumed: number; msToFirstMessage: { count: number }; serverCpuMsPerLogin: number };
    const detail = r.detail as { skipped: string[]; paths: Path[]; storms: Record<"classic" | "fast", { detail: { steps: { completed: number; failures: number }[] } }> };
    assert.deepEqual(detail.skipped, []);
    const byName = Object.fromEntries(detail.paths.map((p) => [p.path, p]));
    assert.deepEqual(Object.keys(byName), PATHS.map((p) => p.name));
    for (const p of detail.paths) {
      assert.equal(p.failures, 0, `${p.path}: ${p.firstError}`);
      assert.equal(p.msToFirstMessage.count, 3, `${p.path}: every login got its message (or, TLS alone, its handshake)`);
      assert.ok(p.serverCpuMsPerLogin > 0, `${p.path}: the server's CPU was read`);
      assert.equal(p.tlsResumed, p.path.endsWith("tls-resumed") ? 3 : 0, `${p.path}: TLS resumptions`);
    }
    // SCRAM-SHA-1 over STARTTLS: header, starttls, header, auth, response, header, bind, roster, presence.
    assert.deepEqual(byName.classic!.roundTrips, [9]);
    // The same on the direct TLS port, without the first header and <starttls/>.
    assert.deepEqual(byName["classic-direct"]!.roundTrips, [7]);
    assert.deepEqual(byName["fast-bind2-tls-resumed"]!.roundTrips, [4]);
    assert.deepEqual(byName["fast-resume-tls-resumed"]!.outcomes, { resumed: 3, bound: 0 });
    // TLS alone: no stream, so no round trip of XMPP's.
    assert.deepEqual(byName["tls-full"]!.roundTrips, []);
    // header, authenticate, SCRAM response, roster, presence.
    assert.deepEqual(byName.sasl2!.roundTrips, [5]);
    // header, authenticate with the token, roster, presence.
    assert.deepEqual(byName["fast-bind2"]!.roundTrips, [4]);
    assert.deepEqual(byName["fast-bind2"]!.outcomes, { resumed: 0, bound: 3 });
    // header, authenticate with the token and <resume/>: the message follows the <success/>.
    assert.deepEqual(byName["fast-resume"]!.roundTrips, [2]);
    assert.deepEqual(byName["fast-resume"]!.outcomes, { resumed: 3, bound: 0 });
    for (const storm of ["classic", "fast"] as const) {
      const [step] = detail.storms[storm].detail.steps;
      assert.equal(step!.failures, 0, storm);
      assert.equal(step!.completed, 10, storm);
    }
  });
});
