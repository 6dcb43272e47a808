/**
 * The data a migration test puts on a server over XMPP, the same way on every server (a peer or
 * Parley): three accounts, alice with a roster, a vCard, private XML, PEP nodes (avatar,
 * bookmarks, an OMEMO device list and bundle) and a message left for carol while carol is
 * offline. What the importing side must see afterwards is `EXPECTED`.
 */
import { connect, xml, type Connected } from "./xmpp-client.js";

export const USERS = { alice: "alice-pass-1", bob: "bob-pass-2", carol: "carol-pass-3" } as const;

export const EXPECTED = {
  vcardFn: "Alice Example",
  privateColor: "blue",
  offlineBody: "hello carol, from alice",
  omemoDevice: "31415",
  bookmarkRoom: (domain: string) => `team@conference.${domain}`,
  avatarId: "1d4e6a7b9f2c3e5a7b9d1f3a5c7e9b1d3f5a7c9e",
};

const form = (fields: Record<string, string>) =>
  xml("x", { xmlns: "jabber:x:data", type: "submit" },
    xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, "http://jabber.org/protocol/pubsub#publish-options")),
    ...Object.entries(fields).map(([v, value]) => xml("field", { var: v }, xml("value", {}, value))));

const publish = (c: Connected, node: string, id: string, payload: ReturnType<typeof xml>, options?: Record<string, string>) =>
  c.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: "http://jabber.org/protocol/pubsub" },
    xml("publish", { node }, xml("item", { id }, payload)),
    ...(options ? [xml("publish-options", {}, form(options))] : []))));

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Populates `domain` on the server at `port`; the accounts exist already. `prefix` starts each
 * user name (alice becomes `${prefix}alice`), so a live peer gets fresh accounts each run.
 */
export async function populate(port: number, domain: string, prefix = ""): Promise<void> {
  const alice = await connect({ port, domain, username: `${prefix}alice`, password: USERS.alice, resource: "migrate" });
  const bob = await connect({ port, domain, username: `${prefix}bob`, password: USERS.bob, resource: "migrate" });
  try {
    const aliceJid = `${prefix}alice@${domain}`, bobJid = `${prefix}bob@${domain}`, carolJid = `${prefix}carol@${domain}`;
    await alice.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:roster" },
      xml("item", { jid: bobJid, name: "Bob" }, xml("group", {}, "Friends"), xml("group", {}, "Work")))));
    await alice.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:roster" }, xml("item", { jid: carolJid, name: "Carol" }))));
    // RFC 6121 §3.1.3: subscription requests go to "interested resources", those that asked for the roster.
    for (const c of [alice, bob]) await c.iq(xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:roster" })));
    await alice.xmpp.send(xml("presence"));
    await bob.xmpp.send(xml("presence"));
    // Mutual subscription alice <-> bob; alice's request to carol stays pending (carol is offline).
    // Each answer waits for the request to arrive: a server ignores 'subscribed' with no request pending.
    const request = (c: Connected, from: string) => c.waitFor((st) => st.is("presence") && st.attrs.type === "subscribe" && st.attrs.from?.split("/")[0] === from, 10_000);
    await alice.xmpp.send(xml("presence", { to: bobJid, type: "subscribe" }));
    await request(bob, aliceJid);
    await bob.xmpp.send(xml("presence", { to: aliceJid, type: "subscribed" }));
    await bob.xmpp.send(xml("presence", { to: aliceJid, type: "subscribe" }));
    await request(alice, bobJid);
    await alice.xmpp.send(xml("presence", { to: bobJid, type: "subscribed" }));
    await alice.xmpp.send(xml("presence", { to: carolJid, type: "subscribe" }));
    await alice.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, EXPECTED.vcardFn), xml("NICKNAME", {}, "alice"))));
    await alice.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:private" },
      xml("prefs", { xmlns: "urn:example:parley-migration" }, xml("color", {}, EXPECTED.privateColor)))));
    await publish(alice, "eu.siacs.conversations.axolotl.devicelist", "current",
      xml("list", { xmlns: "eu.siacs.conversations.axolotl" }, xml("device", { id: EXPECTED.omemoDevice })), { "pubsub#access_model": "open" });
    await publish(alice, `eu.siacs.conversations.axolotl.bundles:${EXPECTED.omemoDevice}`, "current",
      xml("bundle", { xmlns: "eu.siacs.conversations.axolotl" },
        xml("signedPreKeyPublic", { signedPreKeyId: "1" }, "BQ1hY2tlZC1zaWduZWQtcHJla2V5"),
        xml("signedPreKeySignature", {}, "c2lnbmF0dXJl"),
        xml("identityKey", {}, "BWlkZW50aXR5LWtleQ=="),
        xml("prekeys", {}, xml("preKeyPublic", { preKeyId: "1" }, "BXByZWtleS0x"))), { "pubsub#access_model": "open" });
    await publish(alice, "urn:xmpp:bookmarks:1", EXPECTED.bookmarkRoom(domain),
      xml("conference", { xmlns: "urn:xmpp:bookmarks:1", name: "Team", autojoin: "true" }, xml("nick", {}, "alice")),
      { "pubsub#persist_items": "true", "pubsub#access_model": "whitelist" });
    await publish(alice, "urn:xmpp:avatar:data", EXPECTED.avatarId, xml("data", { xmlns: "urn:xmpp:avatar:data" }, "iVBORw0KGgo="));
    await publish(alice, "urn:xmpp:avatar:metadata", EXPECTED.avatarId, xml("metadata", { xmlns: "urn:xmpp:avatar:metadata" },
      xml("info", { id: EXPECTED.avatarId, bytes: "8", type: "image/png", width: "1", height: "1" })));
    await alice.xmpp.send(xml("message", { to: carolJid, type: "chat", id: "offline-1" }, xml("body", {}, EXPECTED.offlineBody)));
    await settle(500);
  } finally {
    await alice.stop();
    await bob.stop();
  }
}
