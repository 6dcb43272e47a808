/**
 * Sessions that wait for XEP-0198 resumption (issue 22 item 3, issue 21 item 6): they are not
 * "available" while the user has a live session (RFC 6121 §8.5), their queue goes to live
 * resources first, they make room for new binds instead of blocking them, what they hold is
 * bounded in bytes, and every state change is logged once.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { capturingLogger, startTestServer, type TestServer } from "../helpers/server.js";
import { header, openStream, rawSession, type RawClient } from "../helpers/raw.js";
import type { Element } from "@xmpp/xml";

const SM = "urn:xmpp:sm:3";

async function resumable(server: TestServer, user: string, resource: string, maxSeconds?: number): Promise<{ c: RawClient; id: string }> {
  const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
  const from = c.elements.length;
  c.send(`<enable xmlns='${SM}' resume='true'${maxSeconds ? ` max='${maxSeconds}'` : ""}/>`);
  const enabled = await c.waitForElement((e) => e.is("enabled", SM), 5000, from);
  c.send("<presence/>");
  await c.waitForElement((e) => e.is("presence") && e.attrs.from === `${user}@localhost/${resource}`, 5000, from);
  return { c, id: enabled.attrs.id as string };
}

/** A dropped network: no </stream:stream>, so the session hibernates. */
async function drop(server: TestServer, c: RawClient, full: string): Promise<void> {
  c.socket.destroy();
  await until(() => server.sessions.get(full)?.hibernating === true, `${full} hibernates`);
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Authenticated and restarted, not bound: ready for <resume/>. */
async function authenticated(server: TestServer, user: string): Promise<RawClient> {
  const c = await openStream(server.ports.c2sDirectTls!);
  const from = c.elements.length;
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0pw`).toString("base64")}</auth>`);
  await c.waitForElement((e) => e.is("success"), 5000, from);
  c.restartParser();
  const mark = c.elements.length;
  c.send(header());
  await c.waitForElement((e) => e.is("features", "http://etherx.jabber.org/streams"), 5000, mark);
  return c;
}

const messages = (c: RawClient, from = 0) => c.elements.slice(from).filter((e) => e.is("message"));

describe("hibernated sessions", () => {
  let server: TestServer;
  const { log, records } = capturingLogger();
  before(async () => {
    server = await startTestServer({
      streamManagement: { resumeTimeoutSeconds: 1, maxResumeTimeoutSeconds: 60, maxHibernatedQueueBytes: 65536 },
    }, { log });
    for (const u of ["ann", "ben", "cat", "dan", "eve", "sender"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(() => server.cleanup());

  it("a message to the bare JID goes to the live session, not into the hibernated one", async () => {
    const phone = await resumable(server, "ann", "phone");
    await drop(server, phone.c, "ann@localhost/phone");
    const laptop = await resumable(server, "ann", "laptop");
    const sender = await rawSession(server.ports.c2sDirectTls!, "sender", "pw", "s1");
    sender.send("<message to='ann@localhost' type='chat' id='bare1'><body>hi</body></message>");
    await laptop.c.waitForElement((e) => e.is("message") && e.attrs.id === "bare1");
    // The phone comes back: nothing of that message was queued for it.
    const back = await authenticated(server, "ann");
    const from = back.elements.length;
    back.send(`<resume xmlns='${SM}' previd='${phone.id}' h='0'/>`);
    await back.waitForElement((e) => e.is("resumed", SM), 5000, from);
    back.send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    await back.waitForElement((e) => e.attrs.id === "after", 5000, from);
    assert.deepEqual(messages(back, from).map((m) => m.attrs.id), [], "the hibernated session got nothing");
    for (const c of [back, laptop.c, sender]) c.close();
  });

  it("when a hibernated session expires, its queue goes to a live resource, not to another hibernated one", async () => {
    const a = await resumable(server, "ben", "a");
    await drop(server, a.c, "ben@localhost/a");
    const sender = await rawSession(server.ports.c2sDirectTls!, "sender", "pw", "s2");
    sender.send("<message to='ben@localhost/a' type='chat' id='queued'><body>for a</body></message>");
    await until(() => server.sessions.get("ben@localhost/a") !== undefined, "still there");
    // b waits 30 s for its client; a only 1 s (resumeTimeoutSeconds).
    const b = await resumable(server, "ben", "b", 30);
    await drop(server, b.c, "ben@localhost/b");
    const live = await resumable(server, "ben", "live");
    const from = live.c.elements.length;
    // a expires, and its message goes to the live resource at once — not into b, where it would
    // wait until b expires too.
    const got = await live.c.waitForElement((e) => e.is("message") && e.attrs.id === "queued", 5000, from);
    assert.ok(got.getChild("delay", "urn:xmpp:delay"), "with the original delay stamp");
    assert.ok(server.sessions.get("ben@localhost/b")?.hibernating, "b is still waiting");
    for (const c of [live.c, sender]) c.close();
  });

  it("a new bind of a resource held by a hibernated session takes it over, with what it held", async () => {
    const old = await resumable(server, "dan", "same");
    await drop(server, old.c, "dan@localhost/same");
    const sender = await rawSession(server.ports.c2sDirectTls!, "sender", "pw", "s3");
    sender.send("<message to='dan@localhost/same' type='chat' id='held'><body>keep me</body></message>");
    await new Promise((r) => setTimeout(r, 100));
    const fresh = await rawSession(server.ports.c2sDirectTls!, "dan", "pw", "same");
    const from = fresh.elements.length;
    fresh.send("<presence/>");
    await fresh.waitForElement((e) => e.is("message") && e.attrs.id === "held", 5000, from);
    for (const c of [fresh, sender]) c.close();
  });

  it("what a hibernated session holds is bounded in bytes; past the bound it goes to offline storage", async () => {
    const s = await resumable(server, "eve", "phone");
    await drop(server, s.c, "eve@localhost/phone");
    const sender = await rawSession(server.ports.c2sDirectTls!, "sender", "pw", "s4");
    const body = "y".repeat(20_000);
    for (let i = 0; i < 5; i++) sender.send(`<message to='eve@localhost/phone' type='chat' id='big${i}'><body>${body}</body></message>`);
    await until(() => server.sessions.get("eve@localhost/phone") === undefined, "the session ends at the bound");
    await until(() => records.some((r) => r.msg === "hibernated session holds too much; ended"), "logged");
    const back = await authenticated(server, "eve");
    const from = back.elements.length;
    back.send(`<resume xmlns='${SM}' previd='${s.id}' h='0'/>`);
    const failed = await back.waitForElement((e) => e.is("failed", SM), 5000, from);
    assert.ok(failed.getChild("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    back.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    await back.waitForElement((e) => e.attrs.id === "bind", 5000, from);
    back.send("<presence/>");
    await back.waitForElement((e) => e.is("message") && e.attrs.id === "big4", 5000, from);
    assert.deepEqual(messages(back, from).map((m: Element) => m.attrs.id), ["big0", "big1", "big2", "big3", "big4"]);
    for (const c of [back, sender]) c.close();
  });

  it("each state change is logged once at info, and nothing is dropped with a warning", async () => {
    const s = await resumable(server, "ann", "logged");
    await drop(server, s.c, "ann@localhost/logged");
    await until(() => server.sessions.get("ann@localhost/logged") === undefined, "expires");
    const mine = records.filter((r) => r.jid === "ann@localhost/logged");
    assert.deepEqual(mine.map((r) => r.msg), ["resource bound", "session hibernated", "resumption timed out", "session ended"]);
    assert.ok(mine.every((r) => r.level === 30));
    assert.deepEqual(records.filter((r) => (r.level as number) >= 40).map((r) => r.msg), []);
  });
  it("hibernated sessions do not count toward the resource limit; the oldest makes room", async () => {
    const server = await startTestServer({ streamManagement: { resumeTimeoutSeconds: 60 }, limits: { maxResourcesPerUser: 2 } }, { log });
    await server.accounts.create("cat@localhost", "pw");
    const one = await resumable(server, "cat", "one");
    await drop(server, one.c, "cat@localhost/one");
    const two = await resumable(server, "cat", "two");
    await drop(server, two.c, "cat@localhost/two");
    // The limit is 2 and both slots are held by hibernated sessions: a third bind still works.
    const three = await rawSession(server.ports.c2sDirectTls!, "cat", "pw", "three");
    assert.ok(server.sessions.get("cat@localhost/three"));
    assert.equal(server.sessions.get("cat@localhost/one"), undefined, "the oldest hibernated session made room");
    assert.ok(server.sessions.get("cat@localhost/two"));
    const four = await rawSession(server.ports.c2sDirectTls!, "cat", "pw", "four");
    assert.equal(server.sessions.get("cat@localhost/two"), undefined);
    // Two live sessions: now the limit holds.
    const five = await openStream(server.ports.c2sDirectTls!);
    const from = five.elements.length;
    five.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from("\0cat\0pw").toString("base64")}</auth>`);
    await five.waitForElement((e) => e.is("success"), 5000, from);
    five.restartParser();
    five.send(header());
    await five.waitForElement((e) => e.is("features", "http://etherx.jabber.org/streams"), 5000, from);
    five.send("<iq type='set' id='b5'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>five</resource></bind></iq>");
    const refused = await five.waitForElement((e) => e.attrs.id === "b5", 5000, from);
    assert.equal(refused.attrs.type, "error");
    assert.ok(refused.getChild("error")?.getChild("resource-constraint", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert.ok(records.some((r) => r.stage === "bind" && r.msg === "bind refused: too many resources"), "the refusal is logged");
    for (const c of [three, four, five]) c.close();
    await server.cleanup();
  });
});
