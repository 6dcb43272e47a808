/** XEP-0353 Jingle Message Initiation: call signalling is routed, carbon-copied, archived and stored offline like chat. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import type { Element } from "@xmpp/xml";
import { rawSession, iqResult, type RawClient } from "../helpers/raw.js";

const NS_JMI = "urn:xmpp:jingle-message:0";
/** A message with this id carrying a JMI <propose/> (or another JMI element). */
const jmi = (id: string, name = "propose") => (e: Element) => e.is("message") && e.attrs.id === id && !!e.getChild(name, NS_JMI);
/** The message forwarded inside `e`'s <wrapper xmlns=ns/> child. */
const forwarded = (e: Element, wrapper: string, ns: string) => e.getChild(wrapper, ns)?.getChild("forwarded", "urn:xmpp:forward:0")?.getChild("message");

const propose = (id: string) => `<message to='alice@localhost' type='chat' id='${id}'><propose xmlns='urn:xmpp:jingle-message:0' id='call-${id}'>`
  + "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose><store xmlns='urn:xmpp:hints'/></message>";

describe("jingle message initiation (XEP-0353)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    c.send("<presence/>");
    c.send(`<iq type='set' id='carbons-${resource}'><enable xmlns='urn:xmpp:carbons:2'/></iq>`);
    await c.waitForElement(iqResult(`carbons-${resource}`));
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
    await phone.waitForElement(jmi("ring"));
    await laptop.waitForElement(jmi("ring"));
    phone.send("<message to='bob@localhost/b' type='chat' id='answer'><proceed xmlns='urn:xmpp:jingle-message:0' id='call-ring'/><store xmlns='urn:xmpp:hints'/></message>");
    await bob.waitForElement(jmi("answer", "proceed"));
    await laptop.waitForElement((e) => e.is("message") && forwarded(e, "sent", "urn:xmpp:carbons:2")?.attrs.id === "answer");
    const mark = phone.elements.length;
    phone.send("<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2'/></iq>");
    await phone.waitForElement((e) => e.is("iq") && e.attrs.id === "mam", 5000, mark);
    const archived = phone.elements.slice(mark).map((e) => forwarded(e, "result", "urn:xmpp:mam:2")).filter((m) => m !== undefined);
    for (const name of ["propose", "proceed"]) {
      assert.ok(archived.some((m) => m.getChild(name, NS_JMI)?.attrs.id === "call-ring"), `${name} archived`);
    }
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
    await phone.waitForElement((e) => jmi("missed")(e) && !!e.getChild("delay", "urn:xmpp:delay"));
  });
});
