/**
 * XEP-0191 §3.4 on every path a stanza takes to a client: "the user's server MUST NOT deliver any
 * stanzas from the blocked entity to the user". Stanzas that modules hand to a session
 * themselves (PEP notifications, MUC traffic, offline messages flushed at login) bypass the
 * routing chains, so the rule is also enforced where every stanza leaves: stanza/out.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHarness, type ModuleHarness, type HarnessSession } from "../../src/module-harness.js";
import { defaultModules } from "../../src/modules/index.js";
import type { Element } from "../../src/xmpp/xml.js";

const NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event";
const block = (jid: string) => `<iq type='set' id='b-${jid}'><block xmlns='urn:xmpp:blocking'><item jid='${jid}'/></block></iq>`;
const messagesFrom = (session: HarnessSession, from: string) => session.received.filter((s: Element) => s.name === "message" && s.attrs.from?.startsWith(from));

describe("blocking holds on every delivery path (XEP-0191 §3.4)", () => {
  let h: ModuleHarness;
  before(async () => { h = await startHarness({ modules: defaultModules, config: { upload: false, push: false, appserver: false, extdisco: false } }); });
  after(async () => { await h.stop(); });

  async function befriend(a: HarnessSession, b: HarnessSession) {
    for (const [x, y] of [[a, b], [b, a]] as const) {
      await h.send(x, `<presence type='subscribe' to='${y.jid.bare}'/>`);
      await h.send(y, `<presence type='subscribed' to='${x.jid.bare}'/>`);
    }
  }

  it("presence of a blocked contact is not delivered", async () => {
    const alice = await h.connect("alice1@localhost/a");
    const bob = await h.connect("bob1@localhost/b");
    await befriend(alice, bob);
    await h.send(bob, block("alice1@localhost"));
    bob.received.length = 0;
    await h.send(alice, "<presence><show>away</show></presence>");
    assert.deepEqual(bob.received.filter((s) => s.name === "presence" && s.attrs.from?.startsWith("alice1@")), []);
  });

  it("PEP notifications from a blocked contact are not delivered", async () => {
    const alice = await h.connect("alice2@localhost/a");
    const bob = await h.connect("bob2@localhost/b");
    await befriend(alice, bob);
    await h.hooks.emit("session/caps", { session: bob, features: new Set(["urn:xmpp:example:mood+notify"]) });
    const publish = (text: string) => `<iq type='set' id='p-${text}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:example:mood'><item><mood xmlns='urn:xmpp:example:mood'>${text}</mood></item></publish></pubsub></iq>`;
    await h.send(alice, publish("before"));
    await bob.next((s) => s.name === "message" && !!s.getChild("event", NS_PUBSUB_EVENT));
    await h.send(bob, block("alice2@localhost"));
    bob.received.length = 0;
    await h.send(alice, publish("after"));
    assert.deepEqual(messagesFrom(bob, "alice2@localhost"), []);
  });

  it("a blocked occupant's private and group messages in a room are not delivered", async () => {
    const room = "lobby@conference.localhost";
    const alice = await h.connect("alice3@localhost/a");
    const bob = await h.connect("bob3@localhost/b");
    await h.send(alice, `<presence to='${room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>`);
    await h.send(alice, `<iq type='set' id='instant' to='${room}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`);
    await h.send(bob, `<presence to='${room}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>`);
    await h.send(alice, `<message type='chat' to='${room}/bob'><body>private, before</body></message>`);
    await bob.next((s) => s.name === "message" && s.getChildText("body") === "private, before");
    await h.send(bob, block(`${room}/alice`));
    bob.received.length = 0;
    await h.send(alice, `<message type='chat' to='${room}/bob'><body>private, after</body></message>`);
    await h.send(alice, `<message type='groupchat' to='${room}'><body>to everyone</body></message>`);
    assert.deepEqual(messagesFrom(bob, `${room}/alice`).map((m) => m.getChildText("body")), []);
    // Blocking one occupant leaves the room itself alone.
    await h.send(alice, `<message type='groupchat' to='${room}'><subject>new subject</subject></message>`);
    assert.equal(alice.received.some((s) => s.name === "message" && s.getChildText("subject") === "new subject"), true);
  });

  it("offline messages stored before the block are not delivered after it", async () => {
    const carol = await h.connect("carol4@localhost/c");
    await h.connect("bob4@localhost/setup", { available: false }).then((s) => h.disconnect(s));
    await h.send(carol, "<message type='chat' to='bob4@localhost'><body>while you were out</body></message>");
    // Bob comes back, blocks Carol before his initial presence, which flushes the offline queue (XEP-0160 §4).
    const bob = await h.connect("bob4@localhost/b", { available: false });
    await h.send(bob, block("carol4@localhost"));
    await h.send(bob, "<presence/>");
    assert.deepEqual(messagesFrom(bob, "carol4@localhost"), []);
    // Settled all the same: nothing from Carol waits for the next login.
    assert.equal(await h.storage.offline.count("bob4@localhost"), 0);
  });

  it("carbons do not carry a blocked contact's messages to the other resources", async () => {
    const alice = await h.connect("alice5@localhost/a");
    const phone = await h.connect("bob5@localhost/phone");
    const laptop = await h.connect("bob5@localhost/laptop");
    for (const s of [phone, laptop]) await h.send(s, "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    await h.send(phone, block("alice5@localhost"));
    laptop.received.length = 0;
    await h.send(alice, "<message type='chat' to='bob5@localhost/phone'><body>hi</body></message>");
    assert.deepEqual(laptop.received.filter((s) => s.name === "message"), []);
    assert.deepEqual(messagesFrom(phone, "alice5@localhost"), []);
  });

  it("the user still gets the error for their own message to someone they blocked (XEP-0191 §3.7)", async () => {
    const bob = await h.connect("bob6@localhost/b");
    await h.connect("dave6@localhost/d");
    await h.send(bob, block("dave6@localhost"));
    await h.send(bob, "<message type='chat' id='m1' to='dave6@localhost'><body>hello?</body></message>");
    const error = await bob.next((s) => s.name === "message" && s.attrs.type === "error");
    assert.ok(error.getChild("error")?.getChild("not-acceptable"), error.toString());
  });
});
