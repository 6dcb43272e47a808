/** XEP-0353 Jingle Message Initiation: call signalling is routed, carbon-copied, archived and stored offline like chat. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";

const propose = (id: string) => `<message to='alice@localhost' type='chat' id='${id}'><propose xmlns='urn:xmpp:jingle-message:0' id='call-${id}'>`
  + "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose><store xmlns='urn:xmpp:hints'/></message>";

describe("jingle message initiation (XEP-0353)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    c.send("<presence/>");
    c.send(`<iq type='set' id='carbons-${resource}'><enable xmlns='urn:xmpp:carbons:2'/></iq>`);
    await c.waitFor(new RegExp(`id="carbons-${resource}"`));
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

  it("a proposal rings every device, the answer is carbon-copied, both are archived", async () => {
    const phone = await session("alice", "phone");
    const laptop = await session("alice", "laptop");
    const bob = await session("bob", "b");
    bob.send(propose("ring"));
    await phone.waitFor(/<message[^>]*id="ring"[^>]*><propose xmlns="urn:xmpp:jingle-message:0"/);
    await laptop.waitFor(/<message[^>]*id="ring"[^>]*><propose xmlns="urn:xmpp:jingle-message:0"/);
    phone.send("<message to='bob@localhost/b' type='chat' id='answer'><proceed xmlns='urn:xmpp:jingle-message:0' id='call-ring'/><store xmlns='urn:xmpp:hints'/></message>");
    await bob.waitFor(/id="answer"[^>]*><proceed xmlns="urn:xmpp:jingle-message:0"/);
    await laptop.waitFor(/<sent xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0"><message[^>]*id="answer"/);
    const mark = phone.text.length;
    phone.send("<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2'/></iq>");
    await phone.waitFor(/<iq[^>]*id="mam"/, 5000, mark);
    const results = phone.text.slice(mark);
    assert.match(results, /<result xmlns="urn:xmpp:mam:2"[^>]*>.*?<propose xmlns="urn:xmpp:jingle-message:0" id="call-ring"/s);
    assert.match(results, /<result xmlns="urn:xmpp:mam:2"[^>]*>.*?<proceed xmlns="urn:xmpp:jingle-message:0" id="call-ring"/s);
  });

  it("a proposal to a user who is offline is stored and delivered at the next login", async () => {
    for (const c of open.splice(0)) c.close();
    await new Promise((r) => setTimeout(r, 200));
    const bob = await session("bob", "b2");
    bob.send(propose("missed"));
    await new Promise((r) => setTimeout(r, 300));
    const phone = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "phone2");
    open.push(phone);
    phone.send("<presence/>");
    await phone.waitFor(/<message[^>]*id="missed"[^>]*><propose xmlns="urn:xmpp:jingle-message:0"[^]*?<delay xmlns="urn:xmpp:delay"/);
  });
});
