/** XEP-0280 Message Carbons end to end with raw sessions (exact wire format matters to clients). */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";

describe("message carbons (XEP-0280)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string, enable: boolean) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    c.send("<presence/>");
    if (enable) {
      c.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
      await c.waitFor(/<iq type="result" id="carbons"/);
    }
    open.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of open) c.close();
    await server.cleanup();
  });

  it("sent and received copies go to the user's other carbons-enabled resources, from the bare JID", async () => {
    const phone = await session("alice", "phone", true);
    const laptop = await session("alice", "laptop", true);
    const old = await session("alice", "old", false);
    const bob = await session("bob", "b", true);
    phone.send("<message to='bob@localhost/b' type='chat' id='c1'><body>from phone</body></message>");
    await bob.waitFor(/id="c1"/);
    const sent = await laptop.waitFor(/<message from="alice@localhost" to="alice@localhost\/laptop" type="chat"><sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message to="bob@localhost\/b" type="chat" id="c1" xmlns="jabber:client" from="alice@localhost\/phone"><body>from phone<\/body><\/message><\/forwarded><\/sent><\/message>/);
    assert.ok(sent);
    bob.send("<message to='alice@localhost/phone' type='chat' id='c2'><body>to phone</body></message>");
    await phone.waitFor(/<message[^>]*id="c2"/);
    await laptop.waitFor(/<received xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message to="alice@localhost\/phone" type="chat" id="c2"/);
    await new Promise((r) => setTimeout(r, 200));
    assert.doesNotMatch(old.text, /id="c1"|id="c2"/, "a resource without carbons gets no copies");
    assert.doesNotMatch(phone.text, /<sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message to="bob@localhost\/b" type="chat" id="c1"/, "no copy back to the sender");
  });

  it("<private/> and <no-copy/> messages are not copied; the private marker is stripped", async () => {
    const a1 = await session("alice", "p1", true);
    const a2 = await session("alice", "p2", true);
    const bob = await session("bob", "p", false);
    a1.send("<message to='bob@localhost/p' type='chat' id='priv'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>");
    a1.send("<message to='bob@localhost/p' type='chat' id='nocopy'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>");
    const got = await bob.waitFor(/<message[^>]*id="priv"[^>]*>.*?<\/message>/s);
    assert.doesNotMatch(got[0], /private/);
    await bob.waitFor(/id="nocopy"/);
    await new Promise((r) => setTimeout(r, 200));
    assert.doesNotMatch(a2.text, /id="priv"|id="nocopy"/);
  });

  it("disable stops the copies", async () => {
    const a1 = await session("alice", "d1", true);
    const a2 = await session("alice", "d2", true);
    a2.send("<iq type='set' id='off'><disable xmlns='urn:xmpp:carbons:2'/></iq>");
    await a2.waitFor(/id="off"/);
    const bob = await session("bob", "d", false);
    a1.send("<message to='bob@localhost/d' type='chat' id='afteroff'><body>x</body></message>");
    await bob.waitFor(/id="afteroff"/);
    await new Promise((r) => setTimeout(r, 200));
    assert.doesNotMatch(a2.text, /id="afteroff"/);
  });

  it("strips forged carbon and archive wrappers that a client sends (CVE-2017-5589 class)", async () => {
    const alice = await session("alice", "victim", true);
    const mallory = await session("bob", "mallory", false);
    mallory.send("<message to='alice@localhost/victim' type='chat' id='forged'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
      + "<message from='carol@localhost/x' to='alice@localhost' type='chat'><body>I am carol</body></message></forwarded></received>"
      + "<result xmlns='urn:xmpp:mam:2' id='1'><forwarded xmlns='urn:xmpp:forward:0'><message from='carol@localhost/x'><body>me too</body></message></forwarded></result>"
      + "<body>plain</body></message>");
    const got = await alice.waitFor(/<message[^>]*id="forged"[^>]*>.*?<\/message>/s);
    assert.match(got[0], /from="bob@localhost\/mallory"/);
    assert.doesNotMatch(got[0], /carbons|urn:xmpp:mam:2|I am carol|me too/);
    assert.match(got[0], /<body>plain<\/body>/);
  });
});
