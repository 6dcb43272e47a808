/**
 * What a user's own server publishes, across servers: PEP notifications to contacts on another
 * Parley (XEP-0163 §4, presence and +notify based), and XEP-0357 push to an app server that is a
 * XEP-0114 component of the other server. a.test and b.test federate over loopback (dialback).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { announceCaps, connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { startParleyPair, type ParleyPair } from "../helpers/s2s.js";
import { AppServer, Component, handshakeAccepted, pushField, pushPublish } from "../helpers/component.js";
import type { Element } from "@xmpp/xml";

const PUBSUB = "http://jabber.org/protocol/pubsub";
const EVENT = `${PUBSUB}#event`;
const PUSH = "urn:xmpp:push:0";
const TUNE = "http://jabber.org/protocol/tune";
const NICK = "http://jabber.org/protocol/nick";
const AVATAR_METADATA = "urn:xmpp:avatar:metadata";

/** A PEP publish; `open` makes the node readable by anyone (pubsub#access_model, XEP-0060 §4.5). */
const publishIq = (node: string, id: string, payload: Element, open = false) =>
  xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("publish", { node }, xml("item", { id }, payload)),
    ...(open ? [xml("publish-options", {}, xml("x", { xmlns: "jabber:x:data", type: "submit" },
      xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, `${PUBSUB}#publish-options`)),
      xml("field", { var: "pubsub#access_model" }, xml("value", {}, "open"))))] : [])));
/** Any PEP event notification from `owner`. */
const anyEvent = (s: Element, owner: string) => s.is("message") && s.attrs.from === owner && s.getChild("event", EVENT) !== undefined;
/** The item of a PEP event notification for `node` from `owner`, if `s` is one. */
const eventItem = (s: Element, owner: string, node: string) =>
  s.is("message") && s.attrs.from === owner ? s.getChild("event", EVENT)?.getChild("items")?.attrs.node === node ? s.getChild("event", EVENT)!.getChild("items")!.getChild("item") : undefined : undefined;

describe("PEP and push across servers", () => {
  let pair: ParleyPair;
  let app: AppServer;
  const clients: Connected[] = [];
  const login = async (server: "a" | "b", user: string, resource: string) => {
    const s = pair[server];
    const c = await connect({ port: s.ports.c2s!, domain: `${server}.test`, username: user, password: "pw", resource });
    clients.push(c);
    return c;
  };
  /** Messages a.test has handed to its stream to b.test (parley_s2s_stanzas_out_total). */
  const messagesSentByA = async () => {
    const { body } = await pair.a.metrics!.render();
    return Number(/^parley_s2s_stanzas_out_total\{outcome="sent",kind="message"\} (\d+)$/m.exec(body)?.[1] ?? 0);
  };
  const logout = async (c: Connected) => {
    clients.splice(clients.indexOf(c), 1);
    await c.stop();
  };
  before(async () => {
    pair = await startParleyPair({
      bDomains: ["push.b.test"],
      b: { listen: { component: 0 }, components: { "push.b.test": { secret: "app-server-secret" } } },
      a: { modules: { push: { coalesceSeconds: 1 } } },
    });
    await pair.b.accounts.create("carol@b.test", "pw");
    // alice and bob are mutual contacts. alice is subscribed to carol (so a.test sees carol's
    // presence and caps), carol is not subscribed to alice (so she gets none of alice's PEP).
    await pair.a.storage.roster.put("alice@a.test", { jid: "bob@b.test", groups: [], subscription: "both", ask: false, approved: false });
    await pair.b.storage.roster.put("bob@b.test", { jid: "alice@a.test", groups: [], subscription: "both", ask: false, approved: false });
    await pair.a.storage.roster.put("alice@a.test", { jid: "carol@b.test", groups: [], subscription: "to", ask: false, approved: false });
    await pair.b.storage.roster.put("carol@b.test", { jid: "alice@a.test", groups: [], subscription: "from", ask: false, approved: false });
    const component = await Component.open(pair.b.ports.component!, "push.b.test");
    await component.handshake("app-server-secret");
    await component.waitForElement(handshakeAccepted);
    app = new AppServer(component);
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await pair?.a.cleanup();
    await pair?.b.cleanup();
  });

  it("a contact on another server with +notify gets the last avatar on presence, then each tune; a node without +notify and a non-subscriber get nothing", async () => {
    const alice = await login("a", "alice", "r");
    await alice.xmpp.send(xml("presence"));
    await alice.iq(publishIq(AVATAR_METADATA, "avatar-1", xml("metadata", { xmlns: AVATAR_METADATA },
      xml("info", { id: "avatar-1", bytes: "100", type: "image/png", width: "64", height: "64" }))));

    // XEP-0163 §4.3.4: bob's presence, with caps showing +notify, brings the last item of the node.
    const bob = await login("b", "bob", "phone");
    const lastAvatar = bob.waitFor((s) => eventItem(s, "alice@a.test", AVATAR_METADATA) !== undefined, 10_000);
    await announceCaps(bob, [`${AVATAR_METADATA}+notify`, `${TUNE}+notify`]);
    const avatar = await lastAvatar;
    assert.equal(avatar.attrs.to, "bob@b.test/phone");
    assert.equal(eventItem(avatar, "alice@a.test", AVATAR_METADATA)!.attrs.id, "avatar-1");
    assert.ok(avatar.getChild("delay", "urn:xmpp:delay"), "the last item carries its publication time");

    // A live publish: the nick first (open to anyone; bob shows no +notify for it), then a tune.
    await alice.iq(publishIq(NICK, "current", xml("nick", { xmlns: NICK }, "Alice"), true));
    await alice.iq(publishIq(TUNE, "current", xml("tune", { xmlns: TUNE }, xml("artist", {}, "Yes"), xml("title", {}, "Heart of the Sunrise"))));
    const tune = await bob.waitFor((s) => eventItem(s, "alice@a.test", TUNE) !== undefined, 10_000);
    assert.equal(tune.attrs.to, "bob@b.test/phone");
    assert.equal(tune.attrs.type, "headline");
    assert.equal(eventItem(tune, "alice@a.test", TUNE)!.getChild("tune", TUNE)!.getChildText("title"), "Heart of the Sunrise");
    // One stream carries alice's stanzas to b.test, in order: a nick notification would be here by now.
    assert.ok(!bob.inbox.some((s) => eventItem(s, "alice@a.test", NICK)), "no +notify for the nick, no nick");

    // carol shows the same caps as bob (a.test knows that ver now): her presence reaches alice,
    // but she is not subscribed to alice — not even the open nick's last item comes.
    const carol = await login("b", "carol", "laptop");
    await announceCaps(carol, [`${NICK}+notify`, `${TUNE}+notify`]);
    await alice.waitFor((s) => s.is("presence") && s.attrs.from === "carol@b.test/laptop", 10_000);
    await alice.iq(publishIq(TUNE, "current", xml("tune", { xmlns: TUNE }, xml("title", {}, "Long Distance Runaround"))));
    await bob.waitFor((s) => eventItem(s, "alice@a.test", TUNE)?.getChild("tune", TUNE)?.getChildText("title") === "Long Distance Runaround", 10_000);
    // What a.test sends carol travels in order on one stream: a message sent now comes after any PEP.
    await alice.xmpp.send(xml("message", { to: "carol@b.test/laptop", type: "chat", id: "after-tune" }, xml("body", {}, "hi")));
    await carol.waitFor((s) => s.attrs.id === "after-tune", 10_000);
    assert.ok(!carol.inbox.some((s) => anyEvent(s, "alice@a.test")), "no PEP notification for a contact not subscribed to alice");
  });

  it("a contact's resource that went offline is not notified any more; coming back, it gets the last item again", async () => {
    const alice = await login("a", "alice", "r2");
    await alice.xmpp.send(xml("presence"));
    const phone = clients.find((c) => c.jid === "bob@b.test/phone")!;
    const tablet = await login("b", "bob", "tablet");
    await announceCaps(tablet, [`${TUNE}+notify`]);
    await tablet.waitFor((s) => eventItem(s, "alice@a.test", TUNE) !== undefined, 10_000);
    await logout(tablet);
    // The unavailable presence has reached a.test once alice sees it.
    await alice.waitFor((s) => s.is("presence") && s.attrs.from === "bob@b.test/tablet" && s.attrs.type === "unavailable", 10_000);
    const sentBefore = await messagesSentByA();
    await alice.iq(publishIq(TUNE, "current", xml("tune", { xmlns: TUNE }, xml("title", {}, "Roundabout"))));
    await phone.waitFor((s) => eventItem(s, "alice@a.test", TUNE)?.getChild("tune", TUNE)?.getChildText("title") === "Roundabout", 10_000);
    assert.equal(await messagesSentByA(), sentBefore + 1, "one notification crossed: the phone's, none for the tablet");
    const back = await login("b", "bob", "tablet");
    await announceCaps(back, [`${TUNE}+notify`]);
    const last = await back.waitFor((s) => eventItem(s, "alice@a.test", TUNE) !== undefined, 10_000);
    assert.equal(eventItem(last, "alice@a.test", TUNE)!.getChild("tune", TUNE)!.getChildText("title"), "Roundabout");
  });

  it("push (XEP-0357) through an app server on the other server: the publish crosses s2s with the summary", async () => {
    const phone = await login("a", "alice", "phone");
    await phone.iq(xml("iq", { type: "set" },
      xml("enable", { xmlns: PUSH, jid: "push.b.test", node: "node-alice" },
        xml("x", { xmlns: "jabber:x:data", type: "submit" },
          xml("field", { var: "FORM_TYPE" }, xml("value", {}, `${PUBSUB}#publish-options`)),
          xml("field", { var: "secret" }, xml("value", {}, "s3cr3t"))))));
    // Every resource of alice goes away, so the message goes to offline storage and wakes the phone.
    for (const c of clients.filter((c) => c.jid.startsWith("alice@"))) await logout(c);
    const before = app.pushes.length;
    const bob = await login("b", "bob", "pusher");
    await bob.xmpp.send(xml("message", { to: "alice@a.test", type: "chat", id: "wake-up" }, xml("body", {}, "are you there?")));
    const push = await app.nextPush(before, 10_000);
    assert.equal(push.attrs.from, "alice@a.test");
    assert.equal(push.attrs.to, "push.b.test");
    assert.equal(pushPublish(push)?.attrs.node, "node-alice");
    assert.equal(pushField(push, "FORM_TYPE"), "urn:xmpp:push:summary");
    assert.equal(pushField(push, "message-count"), "1");
    assert.equal(pushField(push, "last-message-sender"), "bob@b.test/pusher");
    assert.equal(pushField(push, "secret", "publish-options"), "s3cr3t");
  });
});
