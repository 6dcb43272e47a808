/** Delivery rules that need their own server configuration: offline queue limit, priorities, multi-resource. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";

describe("delivery rules (e2e)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    open.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer({ modules: { offline: { maxPerUser: 2 } } });
    for (const u of ["alice", "bob", "carol"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of open) c.close();
    await server.cleanup();
  });

  it("a full offline queue answers service-unavailable (XEP-0160), never a silent drop", async () => {
    const a = await session("alice", "q");
    for (const id of ["o1", "o2", "o3"]) a.send(`<message to='bob@localhost' type='chat' id='${id}'><body>${id}</body></message>`);
    await a.waitFor(/id="o3"[^>]*type="error"|type="error"[^>]*id="o3"/);
    assert.match(a.text, /<service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"\/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">The recipient(?:'|&apos;)s offline queue is full<\/text>/);
    assert.doesNotMatch(a.text, /id="o1"[^>]*type="error"/);
    assert.equal(await server.storage.offline.count("bob@localhost"), 2);
  });

  it("bare-JID chat goes to every resource of the top priority, not to lower or negative ones", async () => {
    const high1 = await session("carol", "h1");
    const high2 = await session("carol", "h2");
    const low = await session("carol", "low");
    const neg = await session("carol", "neg");
    high1.send("<presence><priority>5</priority></presence>");
    high2.send("<presence><priority>5</priority></presence>");
    low.send("<presence><priority>1</priority></presence>");
    neg.send("<presence><priority>-1</priority></presence>");
    await new Promise((r) => setTimeout(r, 200));
    const a = await session("alice", "s");
    a.send("<message to='carol@localhost' type='chat' id='prio'><body>x</body></message>");
    await high1.waitFor(/id="prio"/);
    await high2.waitFor(/id="prio"/);
    await new Promise((r) => setTimeout(r, 200));
    assert.doesNotMatch(low.text, /id="prio"/);
    assert.doesNotMatch(neg.text, /id="prio"/);
    // A message to a full JID that is gone falls back to the bare JID (RFC 6121 §8.5.3.2.1).
    a.send("<message to='carol@localhost/gone' type='chat' id='fallback'><body>x</body></message>");
    await high1.waitFor(/id="fallback"/);
  });
});
