/**
 * A client that stops reading (HARDENING §2.2, CVE-2008-1728 class; issue 21 item 1): over the
 * send-buffer cap its connection is closed once, memory stays bounded, and what it had not
 * acknowledged takes the normal path (another resource or offline storage). Everyone else keeps
 * being served.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { capturingLogger, startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

/** Above the largest stanza (256 KiB after authentication), far below what the flood sends. */
const CAP = 1024 * 1024;
const BODY = "x".repeat(200 * 1024);

async function until(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Logs in over raw TLS, sends initial presence, then stops reading its socket. */
async function stalledReader(server: TestServer, user: string, sm: boolean): Promise<RawClient> {
  const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", "stalled");
  if (sm) {
    const from = c.elements.length;
    c.send("<enable xmlns='urn:xmpp:sm:3'/>");
    await c.waitForElement((e) => e.is("enabled", "urn:xmpp:sm:3"), 5000, from);
  }
  c.send("<presence/>");
  await c.waitForElement((e) => e.is("presence"));
  c.socket.pause();
  return c;
}

async function flood(sender: Connected, to: string, count: number, prefix: string): Promise<void> {
  for (let i = 0; i < count; i++) {
    await sender.xmpp.send(xml("message", { to, type: "chat", id: `${prefix}${i}` }, xml("body", {}, BODY)));
  }
}

describe("a client that stops reading", () => {
  let server: TestServer;
  const { log, records } = capturingLogger();
  let bob: Connected;
  before(async () => {
    server = await startTestServer({ limits: { maxSendBufferBytes: CAP } }, { log });
    for (const u of ["vic", "wendy", "bob"]) await server.accounts.create(`${u}@localhost`, "pw");
    bob = await connect({ port: server.ports.c2s!, username: "bob", password: "pw" });
  });
  after(async () => {
    await bob.stop();
    await server.cleanup();
  });

  it("is closed once over the send-buffer cap, with one log line, and others keep being served", async () => {
    const vic = await stalledReader(server, "vic", false);
    await flood(bob, "vic@localhost/stalled", 100, "v");
    await until(() => server.sessions.get("vic@localhost/stalled") === undefined, "vic's session ends");
    const overflow = records.filter((r) => r.stage === "stream" && r.condition === "resource-constraint");
    assert.equal(overflow.length, 1, "exactly one stream error logged");
    assert.equal(records.filter((r) => typeof r.level === "number" && r.level >= 50).length, 0, "nothing failed on the way");
    // The server still answers the sender.
    const pong = await bob.iq(xml("iq", { type: "get", to: "localhost", id: "still-here" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(pong.attrs.type, "result");
    vic.close();
  });

  it("with stream management, what it never acknowledged reaches it at the next login", async () => {
    // Unacknowledged stanzas count toward the bound (the socket's buffers do not hide them): 4 MB is plenty.
    const wendy = await stalledReader(server, "wendy", true);
    await flood(bob, "wendy@localhost/stalled", 20, "w");
    await until(() => server.sessions.get("wendy@localhost/stalled") === undefined, "wendy's session ends");
    wendy.close();
    const back = await connect({ port: server.ports.c2s!, username: "wendy", password: "pw", resource: "back" });
    await back.xmpp.send(xml("presence"));
    await back.waitFor((s) => s.is("message") && s.attrs.id === "w19", 20_000);
    const ids = new Set(back.inbox.filter((s) => s.is("message")).map((s) => s.attrs.id));
    for (let i = 0; i < 20; i++) assert.ok(ids.has(`w${i}`), `w${i} arrived`);
    await back.stop();
  });
});
