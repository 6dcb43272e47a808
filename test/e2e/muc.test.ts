/** XEP-0045 multi-user chat end to end with xmpp.js: rooms, roles, affiliations, history, archive, occupant ids. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";
import { createHash } from "node:crypto";
import { rawSession, iqResult, type RawClient } from "../helpers/raw.js";

const MUC = "http://jabber.org/protocol/muc";
const MUC_USER = `${MUC}#user`;
const ROOM = "team@conference.localhost";
const codes = (p: Element) => p.getChild("x", MUC_USER)?.getChildren("status").map((s) => Number(s.attrs.code)) ?? [];
/** A room presence carrying this status code. */
const mucStatus = (code: string) => (e: Element) => e.is("presence") && codes(e).includes(Number(code));

describe("multi-user chat (XEP-0045)", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  const login = async (user: string, resource = "r") => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw", resource });
    await c.xmpp.send(xml("presence"));
    clients.push(c);
    return c;
  };
  const join = async (c: Connected, nick: string, room = ROOM, extra: Element[] = []) => {
    const mark = c.inbox.length;
    await c.xmpp.send(xml("presence", { to: `${room}/${nick}` }, xml("x", { xmlns: MUC }, ...extra)));
    return c.waitFor((s) => c.inbox.indexOf(s) >= mark && s.name === "presence" && s.attrs.from === `${room}/${nick}` && (codes(s).includes(110) || s.attrs.type === "error"));
  };
  const configure = (c: Connected, fields: Record<string, string>, room = ROOM) => c.iq(xml("iq", { type: "set", to: room },
    xml("query", { xmlns: `${MUC}#owner` }, xml("x", { xmlns: "jabber:x:data", type: "submit" },
      xml("field", { var: "FORM_TYPE" }, xml("value", {}, `${MUC}#roomconfig`)),
      ...Object.entries(fields).map(([k, v]) => xml("field", { var: k }, xml("value", {}, v)))))));
  before(async () => {
    server = await startTestServer();
    for (const u of ["owner", "bob", "carol", "dave", "erin"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  it("the service is discoverable; a new room is locked (201) until its owner configures it", async () => {
    const owner = await login("owner");
    const items = await owner.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items" })));
    assert.ok(items.getChild("query")!.getChildren("item").some((i) => i.attrs.jid === "conference.localhost"));
    const self = await join(owner, "boss");
    assert.deepEqual(codes(self).sort(), [110, 170, 201]);
    assert.equal(self.getChild("x", MUC_USER)!.getChild("item")!.attrs.affiliation, "owner");
    assert.equal(self.getChild("x", MUC_USER)!.getChild("item")!.attrs.role, "moderator");
    assert.ok(self.getChild("occupant-id", "urn:xmpp:occupant-id:0")?.attrs.id);
    const bob = await login("bob");
    const locked = await join(bob, "bob");
    assert.equal(locked.attrs.type, "error");
    assert.ok(locked.getChild("error")!.getChild("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    const form = await owner.iq(xml("iq", { type: "get", to: ROOM }, xml("query", { xmlns: `${MUC}#owner` })));
    assert.ok(form.getChild("query")!.getChild("x", "jabber:x:data")!.getChildren("field").some((f) => f.attrs.var === "muc#roomconfig_membersonly"));
    await configure(owner, { "muc#roomconfig_roomname": "The Team", "muc#roomconfig_persistentroom": "1", "muc#roomconfig_whois": "anyone" });
    const info = await bob.iq(xml("iq", { type: "get", to: ROOM }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const features = info.getChild("query")!.getChildren("feature").map((f) => f.attrs.var);
    for (const f of [MUC, "muc_persistent", "muc_open", "muc_nonanonymous", "urn:xmpp:mam:2", "urn:xmpp:occupant-id:0"]) assert.ok(features.includes(f), f);
  });

  it("joining: others' presence first, then one's own with 110; messages reach everyone with the room's stanza-id and a stable occupant-id; history and subject on join", async () => {
    const owner = clients[0]!;
    const bob = clients[1]!;
    const joined = await join(bob, "bob");
    assert.deepEqual(codes(joined).sort(), [100, 110, 170]);
    const before = bob.inbox.indexOf(joined);
    assert.ok(bob.inbox.slice(0, before).some((s) => s.attrs.from === `${ROOM}/boss`), "the owner's presence came first");
    await owner.waitFor((s) => s.attrs.from === `${ROOM}/bob` && s.name === "presence");
    await owner.xmpp.send(xml("message", { to: ROOM, type: "groupchat" }, xml("subject", {}, "Weekly sync")));
    await bob.waitFor((s) => s.getChildText("subject") === "Weekly sync");
    for (let i = 0; i < 3; i++) await owner.xmpp.send(xml("message", { to: ROOM, type: "groupchat", id: `g${i}` }, xml("body", {}, `hello ${i}`)));
    const got = await bob.waitFor((s) => s.attrs.id === "g2");
    assert.equal(got.attrs.from, `${ROOM}/boss`);
    assert.equal(got.getChild("stanza-id", "urn:xmpp:sid:0")!.attrs.by, ROOM);
    const ownerEcho = await owner.waitFor((s) => s.attrs.id === "g2" && s.attrs.type === "groupchat");
    assert.equal(ownerEcho.getChild("occupant-id", "urn:xmpp:occupant-id:0")!.attrs.id, got.getChild("occupant-id", "urn:xmpp:occupant-id:0")!.attrs.id);

    const carol = await login("carol");
    await carol.xmpp.send(xml("presence", { to: `${ROOM}/carol` }, xml("x", { xmlns: MUC }, xml("history", { maxstanzas: "2" }))));
    await carol.waitFor((s) => s.name === "presence" && s.attrs.from === `${ROOM}/carol` && codes(s).includes(110));
    const subject = await carol.waitFor((s) => s.name === "message" && s.getChild("subject") !== undefined && !s.getChild("body"));
    const history = carol.inbox.filter((s) => s.name === "message" && s.getChild("body") && s.getChild("delay", "urn:xmpp:delay"));
    assert.deepEqual(history.map((m) => m.getChildText("body")), ["hello 1", "hello 2"], "maxstanzas=2: the last two");
    assert.ok(carol.inbox.indexOf(subject) > carol.inbox.indexOf(history[1]!), "the subject comes after the history");
    assert.equal(subject.getChildText("subject"), "Weekly sync");
  });

  it("a nick conflict, a nick change (303), private messages and self-ping", async () => {
    const carol = clients[2]!;
    const bob = clients[1]!;
    const dave = await login("dave");
    const conflict = await join(dave, "bob");
    assert.ok(conflict.getChild("error")!.getChild("conflict", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    await carol.xmpp.send(xml("presence", { to: `${ROOM}/caroline` }));
    const gone = await bob.waitFor((s) => s.attrs.from === `${ROOM}/carol` && s.attrs.type === "unavailable");
    assert.ok(codes(gone).includes(303));
    assert.equal(gone.getChild("x", MUC_USER)!.getChild("item")!.attrs.nick, "caroline");
    await bob.waitFor((s) => s.attrs.from === `${ROOM}/caroline` && s.name === "presence" && s.attrs.type === undefined);
    await bob.xmpp.send(xml("message", { to: `${ROOM}/caroline`, type: "chat", id: "pm" }, xml("body", {}, "psst")));
    const pm = await carol.waitFor((s) => s.attrs.id === "pm");
    assert.equal(pm.attrs.from, `${ROOM}/bob`);
    const pong = await carol.iq(xml("iq", { type: "get", to: `${ROOM}/caroline` }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(pong.attrs.type, "result");
    await assert.rejects(dave.iq(xml("iq", { type: "get", to: `${ROOM}/dave` }, xml("ping", { xmlns: "urn:xmpp:ping" }))),
      (err: { condition?: string }) => err.condition === "not-acceptable", "XEP-0410: not an occupant");
  });

  it("kick (307) and ban (301); the banned cannot come back; lists are for admins only", async () => {
    const owner = clients[0]!;
    const bob = clients[1]!;
    const dave = clients[3]!;
    await join(dave, "dave");
    await owner.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: `${MUC}#admin` }, xml("item", { nick: "dave", role: "none" }, xml("reason", {}, "cool down")))));
    const kicked = await dave.waitFor((s) => s.attrs.from === `${ROOM}/dave` && s.attrs.type === "unavailable");
    assert.ok(codes(kicked).includes(307) && codes(kicked).includes(110));
    await join(dave, "dave");
    await owner.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: `${MUC}#admin` }, xml("item", { jid: "dave@localhost", affiliation: "outcast" }))));
    const banned = await bob.waitFor((s) => s.attrs.from === `${ROOM}/dave` && s.attrs.type === "unavailable" && codes(s).includes(301));
    assert.ok(banned);
    const again = await join(dave, "dave2");
    assert.ok(again.getChild("error")!.getChild("forbidden", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    const list = await owner.iq(xml("iq", { type: "get", to: ROOM }, xml("query", { xmlns: `${MUC}#admin` }, xml("item", { affiliation: "outcast" }))));
    assert.deepEqual(list.getChild("query")!.getChildren("item").map((i) => i.attrs.jid), ["dave@localhost"]);
    await assert.rejects(bob.iq(xml("iq", { type: "get", to: ROOM }, xml("query", { xmlns: `${MUC}#admin` }, xml("item", { affiliation: "member" })))),
      (err: { condition?: string }) => err.condition === "forbidden");
    await assert.rejects(bob.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: `${MUC}#admin` }, xml("item", { jid: "bob@localhost", affiliation: "owner" })))),
      (err: { condition?: string }) => err.condition === "forbidden", "a participant cannot make itself owner");
  });

  it("members-only: a non-member gets registration-required; a member gets in; the room archive pages with MAM, not for outsiders", async () => {
    const owner = clients[0]!;
    await configure(owner, { "muc#roomconfig_membersonly": "1" });
    await owner.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: `${MUC}#admin` }, xml("item", { jid: "bob@localhost", affiliation: "member" }), xml("item", { jid: "carol@localhost", affiliation: "member" }))));
    const erin = await login("erin");
    const refused = await join(erin, "erin");
    assert.ok(refused.getChild("error")!.getChild("registration-required", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    const bob = clients[1]!;
    const page = await bob.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "rq" },
      xml("set", { xmlns: "http://jabber.org/protocol/rsm" }, xml("max", {}, "2")))));
    const fin = page.getChild("fin", "urn:xmpp:mam:2")!;
    assert.equal(fin.attrs.complete, undefined);
    const results = bob.inbox.filter((s) => s.getChild("result", "urn:xmpp:mam:2")?.attrs.queryid === "rq");
    assert.equal(results.length, 2);
    assert.equal(results[0]!.attrs.from, ROOM);
    await assert.rejects(erin.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: "urn:xmpp:mam:2" }))), (err: { condition?: string }) => err.condition === "forbidden");
  });

  it("a room avatar: owners set the room's vCard, occupants hear the new hash, disco shows it (XEP-0486)", async () => {
    const owner = clients[0]!;
    const bob = clients[1]!;
    const photo = Buffer.from("fake png bytes").toString("base64");
    const hash = createHash("sha1").update(Buffer.from(photo, "base64")).digest("hex");
    // Bob lost his seat (322) when the room went members-only before he was a member; back in as one.
    await join(bob, "bob");
    await assert.rejects(bob.iq(xml("iq", { type: "set", to: ROOM }, xml("vCard", { xmlns: "vcard-temp" }))), (err: { condition?: string }) => err.condition === "forbidden");
    await owner.iq(xml("iq", { type: "set", to: ROOM }, xml("vCard", { xmlns: "vcard-temp" }, xml("PHOTO", {}, xml("TYPE", {}, "image/png"), xml("BINVAL", {}, photo)))));
    const update = await bob.waitFor((s) => s.name === "presence" && s.attrs.from === ROOM && s.getChild("x", "vcard-temp:x:update") !== undefined);
    assert.equal(update.getChild("x", "vcard-temp:x:update")!.getChildText("photo"), hash);
    const info = await bob.iq(xml("iq", { type: "get", to: ROOM }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const field = info.getChild("query")!.getChild("x", "jabber:x:data")!.getChildren("field").find((f) => f.attrs.var === "muc#roominfo_avatarhash");
    assert.equal(field?.getChildText("value"), hash);
    const card = await bob.iq(xml("iq", { type: "get", to: ROOM }, xml("vCard", { xmlns: "vcard-temp" })));
    assert.equal(card.getChild("vCard")!.getChild("PHOTO")!.getChildText("BINVAL"), photo);
  });

  it("leaving, a password room, a mediated invitation, the same occupant-id after rejoining, and destroying a room", async () => {
    const owner = clients[0]!;
    const carol = clients[2]!;
    const erin = clients.find((c) => c.jid.startsWith("erin@"))!;
    const secret = "side@conference.localhost";
    const first = await join(owner, "boss", secret);
    assert.ok(codes(first).includes(201));
    await configure(owner, { "muc#roomconfig_passwordprotectedroom": "1", "muc#roomconfig_roomsecret": "letmein" }, secret);
    const wrong = await join(carol, "carol", secret);
    assert.ok(wrong.getChild("error")!.getChild("not-authorized", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    const inside = await join(carol, "carol", secret, [xml("password", {}, "letmein")]);
    const id1 = inside.getChild("occupant-id", "urn:xmpp:occupant-id:0")!.attrs.id;
    await carol.xmpp.send(xml("presence", { to: `${secret}/carol`, type: "unavailable" }, xml("status", {}, "bye")));
    const left = await owner.waitFor((s) => s.attrs.from === `${secret}/carol` && s.attrs.type === "unavailable");
    assert.equal(left.getChildText("status"), "bye");
    const back = await join(carol, "carol-again", secret, [xml("password", {}, "letmein")]);
    assert.equal(back.getChild("occupant-id", "urn:xmpp:occupant-id:0")!.attrs.id, id1, "stable per real JID, whatever the nick");
    await owner.xmpp.send(xml("message", { to: secret }, xml("x", { xmlns: MUC_USER }, xml("invite", { to: "erin@localhost" }, xml("reason", {}, "join us")))));
    const invitation = await erin.waitFor((s) => s.attrs.from === secret && s.getChild("x", MUC_USER)?.getChild("invite") !== undefined);
    assert.equal(invitation.getChild("x", MUC_USER)!.getChild("invite")!.attrs.from, "owner@localhost");
    assert.equal(invitation.getChild("x", MUC_USER)!.getChildText("password"), "letmein");
    await owner.xmpp.send(xml("message", { to: secret, type: "groupchat", id: "before-destroy" }, xml("body", {}, "the old room's secret")));
    await owner.waitFor((s) => s.attrs.id === "before-destroy" && s.attrs.type === "groupchat");
    await owner.iq(xml("iq", { type: "set", to: secret }, xml("query", { xmlns: `${MUC}#owner` },
      xml("destroy", { jid: ROOM }, xml("reason", {}, "moved")))));
    const destroyed = await carol.waitFor((s) => s.attrs.from === `${secret}/carol-again` && s.getChild("x", MUC_USER)?.getChild("destroy") !== undefined);
    assert.equal(destroyed.getChild("x", MUC_USER)!.getChild("destroy")!.attrs.jid, ROOM);
    await assert.rejects(carol.iq(xml("iq", { type: "get", to: secret }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" }))),
      (err: { condition?: string }) => err.condition === "item-not-found");
    // A new room of the same name starts empty: no configuration, no history from the old one.
    const reborn = await join(owner, "boss", secret);
    assert.ok(codes(reborn).includes(201));
    await configure(owner, {}, secret);
    await owner.iq(xml("iq", { type: "set", to: secret }, xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "reborn" })));
    assert.equal(owner.inbox.filter((s) => s.getChild("result", "urn:xmpp:mam:2")?.attrs.queryid === "reborn").length, 0);
  });

  it("moderated retraction (XEP-0425): occupants are told, the archive keeps a tombstone, participants may not", async () => {
    const owner = clients[0]!;
    const bob = clients[1]!;
    await bob.xmpp.send(xml("message", { to: ROOM, type: "groupchat", id: "oops" }, xml("body", {}, "something regrettable")));
    const seen = await owner.waitFor((s) => s.attrs.id === "oops" && s.attrs.type === "groupchat");
    const stanzaId = seen.getChild("stanza-id", "urn:xmpp:sid:0")!.attrs.id as string;
    await assert.rejects(bob.iq(xml("iq", { type: "set", to: ROOM }, xml("moderate", { xmlns: "urn:xmpp:message-moderate:1", id: stanzaId },
      xml("retract", { xmlns: "urn:xmpp:message-retract:1" })))), (err: { condition?: string }) => err.condition === "forbidden");
    await owner.iq(xml("iq", { type: "set", to: ROOM }, xml("moderate", { xmlns: "urn:xmpp:message-moderate:1", id: stanzaId },
      xml("retract", { xmlns: "urn:xmpp:message-retract:1" }), xml("reason", {}, "off topic"))));
    const notice = await bob.waitFor((s) => s.getChild("retract", "urn:xmpp:message-retract:1")?.attrs.id === stanzaId);
    assert.equal(notice.attrs.from, ROOM);
    const retract = notice.getChild("retract", "urn:xmpp:message-retract:1")!;
    assert.equal(retract.getChild("moderated", "urn:xmpp:message-moderate:1")!.attrs.by, `${ROOM}/boss`);
    assert.equal(retract.getChildText("reason"), "off topic");
    await bob.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "tomb" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE" }, xml("value", {}, "urn:xmpp:mam:2")), xml("field", { var: "ids" }, xml("value", {}, stanzaId))))));
    const [tomb] = bob.inbox.filter((s) => s.getChild("result", "urn:xmpp:mam:2")?.attrs.queryid === "tomb");
    const archived = tomb!.getChild("result", "urn:xmpp:mam:2")!.getChild("forwarded", "urn:xmpp:forward:0")!.getChild("message")!;
    assert.equal(archived.getChild("body"), undefined, "the text is gone from the archive");
    assert.ok(archived.getChild("retracted", "urn:xmpp:message-retract:1"));
    assert.equal(archived.attrs.from, `${ROOM}/bob`);
    await assert.rejects(owner.iq(xml("iq", { type: "set", to: ROOM }, xml("moderate", { xmlns: "urn:xmpp:message-moderate:1", id: "12345" },
      xml("retract", { xmlns: "urn:xmpp:message-retract:1" })))), (err: { condition?: string }) => err.condition === "item-not-found");
  });

  it("history by maxchars, seconds and since; a XEP-0249 direct invitation reaches the invitee unchanged", async () => {
    const owner = clients[0]!;
    const erin = clients.find((c) => c.jid.startsWith("erin@"))!;
    const dave = clients.find((c) => c.jid.startsWith("dave@"))!;
    const room = "history@conference.localhost";
    await join(owner, "boss", room);
    await configure(owner, {}, room);
    for (let i = 0; i < 5; i++) await owner.xmpp.send(xml("message", { to: room, type: "groupchat", id: `h${i}` }, xml("body", {}, `line ${i}`)));
    await owner.waitFor((s) => s.attrs.id === "h4" && s.attrs.type === "groupchat");
    const historyOf = async (nick: string, attrs: Record<string, string>) => {
      const mark = erin.inbox.length;
      await erin.xmpp.send(xml("presence", { to: `${room}/${nick}` }, xml("x", { xmlns: MUC }, xml("history", attrs))));
      await erin.waitFor((s) => erin.inbox.indexOf(s) >= mark && s.name === "message" && s.getChild("subject") !== undefined && !s.getChild("body"));
      const got = erin.inbox.slice(mark).filter((s) => s.name === "message" && s.getChild("body") && s.getChild("delay", "urn:xmpp:delay")).map((m) => m.getChildText("body"));
      await erin.xmpp.send(xml("presence", { to: `${room}/${nick}`, type: "unavailable" }));
      await erin.waitFor((s) => s.attrs.from === `${room}/${nick}` && s.attrs.type === "unavailable");
      return got;
    };
    const oneLine = (await historyOf("e1", { maxstanzas: "5" }));
    assert.deepEqual(oneLine, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
    // maxchars counts the stored stanzas: room for exactly the last two.
    const [, third, fourth] = await server.storage.archive.query(room, { newestFirst: true, limit: 3 });
    assert.deepEqual(await historyOf("e2", { maxchars: String(third!.stanza.length + fourth!.stanza.length) }), ["line 3", "line 4"]);
    assert.deepEqual(await historyOf("e3", { maxchars: "0" }), []);
    assert.deepEqual(await historyOf("e4", { since: new Date(Date.now() + 60_000).toISOString() }), []);
    assert.equal((await historyOf("e5", { seconds: "3600" })).length, 5);
    // XEP-0249: a direct invitation is an ordinary message from the inviter; the server passes it on.
    await owner.xmpp.send(xml("message", { to: "dave@localhost" }, xml("x", { xmlns: "jabber:x:conference", jid: room, reason: "come" })));
    const direct = await dave.waitFor((s) => s.getChild("x", "jabber:x:conference") !== undefined);
    assert.equal(direct.getChild("x", "jabber:x:conference")!.attrs.jid, room);
    assert.match(String(direct.attrs.from), /^owner@localhost\//);
  });

  it("an IQ to an occupant whose client does not answer does not hold up the sender's next stanzas (§17.4)", async () => {
    const room = "quiet@conference.localhost";
    const owner = await login("erin", "iq");
    await join(owner, "erin", room);
    await configure(owner, {}, room);
    // A raw client: it reads what it is sent and answers nothing.
    const silent = await rawSession(server.ports.c2sDirectTls!, "dave", "pw", "silent");
    try {
      silent.send(`<presence to='${room}/dave'><x xmlns='${MUC}'/></presence>`);
      await owner.waitFor((s) => s.name === "presence" && s.attrs.from === `${room}/dave`);
      const mark = owner.inbox.length;
      await owner.xmpp.send(xml("iq", { type: "get", id: "to-silent", to: `${room}/dave` }, xml("query", { xmlns: "jabber:iq:version" })));
      await owner.xmpp.send(xml("message", { type: "groupchat", to: room }, xml("body", {}, "after the iq")));
      await silent.waitForElement((e) => e.name === "iq" && e.attrs.from === `${room}/erin`);
      await owner.waitFor((s) => owner.inbox.indexOf(s) >= mark && s.name === "message" && s.getChildText("body") === "after the iq");
      // The room passed the message on while the IQ still waits for the occupant's answer.
      assert.equal(owner.inbox.slice(mark).some((s) => s.name === "iq" && s.attrs.id === "to-silent"), false);
    } finally {
      silent.close();
    }
  });

  it("a persistent room survives a restart with its configuration, members and archive", async () => {
    for (const c of clients.splice(0)) await c.stop();
    await server.stop();
    const again = await startTestServer({ dataDir: server.dataDir });
    try {
      const bob = await connect({ port: again.ports.c2sDirectTls!, directTls: true, username: "bob", password: "pw", resource: "after" });
      const dave = await connect({ port: again.ports.c2sDirectTls!, directTls: true, username: "dave", password: "pw", resource: "after" });
      clients.push(bob, dave);
      const info = await bob.iq(xml("iq", { type: "get", to: ROOM }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
      assert.equal(info.getChild("query")!.getChild("identity")!.attrs.name, "The Team");
      assert.ok(info.getChild("query")!.getChildren("feature").some((f) => f.attrs.var === "muc_membersonly"));
      const joined = await join(bob, "bob");
      assert.equal(joined.getChild("x", MUC_USER)!.getChild("item")!.attrs.affiliation, "member");
      const subject = await bob.waitFor((s) => s.name === "message" && s.getChildText("subject") === "Weekly sync");
      assert.ok(subject, "the subject was kept");
      const refused = await join(dave, "dave");
      assert.ok(refused.getChild("error")!.getChild("forbidden", "urn:ietf:params:xml:ns:xmpp-stanzas"), "still banned");
      await bob.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "after" })));
      const archived = bob.inbox.filter((s) => s.getChild("result", "urn:xmpp:mam:2")?.attrs.queryid === "after");
      assert.ok(archived.length >= 4, `the archive is still there (${archived.length} messages)`);
    } finally {
      for (const c of clients.splice(0)) await c.stop();
      await again.stop();
    }
  });
});

describe("a large room", () => {
  // Raw sockets here: 256 xmpp.js clients spend a minute parsing the 32,000 presences of the joins.
  it("256 occupants all receive a message", async () => {
    const server = await startTestServer({ limits: { maxConnectionsPerAddress: 400 } });
    const clients: RawClient[] = [];
    try {
      const n = 256;
      for (let i = 0; i < n; i++) await server.accounts.create(`u${i}@localhost`, "pw");
      for (let i = 0; i < n; i += 32) {
        clients.push(...await Promise.all(Array.from({ length: Math.min(32, n - i) }, (_, k) => rawSession(server.ports.c2sDirectTls!, `u${i + k}`, "pw", "r"))));
      }
      const owner = clients[0]!;
      owner.send("<presence to='big@conference.localhost/u0'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
      await owner.waitForElement(mucStatus("201"));
      owner.send("<iq type='set' id='cfg' to='big@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>");
      await owner.waitForElement(iqResult("cfg"));
      const started = performance.now();
      for (let i = 1; i < n; i++) {
        clients[i]!.send(`<presence to='big@conference.localhost/u${i}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>`);
        await clients[i]!.waitForElement(mucStatus("110"), 20_000);
      }
      const joinMs = performance.now() - started;
      const marks = clients.map((c) => c.elements.length);
      owner.send("<message to='big@conference.localhost' type='groupchat' id='all'><body>hello everyone</body></message>");
      await Promise.all(clients.map((c, i) => c.waitForElement((e) => e.is("message") && e.attrs.id === "all" && e.getChildText("body") === "hello everyone", 20_000, marks[i])));
      const presences = clients[n - 1]!.elements.filter((e) => e.is("presence") && String(e.attrs.from).startsWith("big@conference.localhost/")).length;
      console.log(`# 256-occupant room: 255 joins one after another in ${joinMs.toFixed(0)} ms; all 256 got the message; the last joiner saw ${presences} presences`);
      // Shutdown: occupants are told why they are out (status 332).
      const stopping = server.stop();
      await clients[1]!.waitForElement((e) => mucStatus("332")(e) && e.attrs.type === "unavailable", 10_000);
      await stopping;
    } finally {
      for (const c of clients) c.close();
      await server.cleanup();
    }
  });
});
