/**
 * XEP-0045 policy end to end with xmpp.js: who may change roles and affiliations, who may read a
 * room's archive, what an outsider can learn about the occupants, forged ids and occupant ids in
 * private messages, the order of a join, and moderation (XEP-0425).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";

const MUC = "http://jabber.org/protocol/muc";
const MUC_USER = `${MUC}#user`;
const MUC_ADMIN = `${MUC}#admin`;
const MAM = "urn:xmpp:mam:2";
const RSM = "http://jabber.org/protocol/rsm";
const OCCUPANT_ID = "urn:xmpp:occupant-id:0";
const codes = (p: Element) => p.getChild("x", MUC_USER)?.getChildren("status").map((s) => Number(s.attrs.code)) ?? [];
const conditionOf = async (request: Promise<unknown>) => {
  try {
    await request;
    return "result";
  } catch (err) {
    return (err as { condition?: string }).condition ?? String(err);
  }
};

describe("multi-user chat policy", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  const login = async (user: string, resource = "r") => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw", resource });
    await c.xmpp.send(xml("presence"));
    clients.push(c);
    return c;
  };
  /** Joins and returns everything the room sent for the join, up to and including the subject. */
  const join = async (c: Connected, room: string, nick: string, extra: Element[] = []) => {
    const mark = c.inbox.length;
    await c.xmpp.send(xml("presence", { to: `${room}/${nick}` }, xml("x", { xmlns: MUC }, ...extra)));
    const fromRoom = (s: Element) => c.inbox.indexOf(s) >= mark && String(s.attrs.from).startsWith(room);
    const end = await c.waitFor((s) => fromRoom(s) && ((s.name === "message" && s.getChild("subject") !== undefined && !s.getChild("body"))
      || (s.name === "presence" && s.attrs.type === "error")));
    return c.inbox.slice(mark, c.inbox.indexOf(end) + 1).filter(fromRoom);
  };
  const selfPresence = (stanzas: Element[]) => stanzas.find((s) => s.name === "presence" && codes(s).includes(110));
  const configure = (c: Connected, room: string, fields: Record<string, string> = {}) => c.iq(xml("iq", { type: "set", to: room },
    xml("query", { xmlns: `${MUC}#owner` }, xml("x", { xmlns: "jabber:x:data", type: "submit" },
      xml("field", { var: "FORM_TYPE" }, xml("value", {}, `${MUC}#roomconfig`)),
      ...Object.entries(fields).map(([k, v]) => xml("field", { var: k }, xml("value", {}, v)))))));
  const adminSet = (c: Connected, room: string, ...items: Array<Record<string, string>>) =>
    c.iq(xml("iq", { type: "set", to: room }, xml("query", { xmlns: MUC_ADMIN }, ...items.map((i) => xml("item", i)))));
  const mamQuery = (c: Connected, room: string, queryid: string, fields: Record<string, string[]> = {}, max?: number) => c.iq(xml("iq", { type: "set", to: room },
    xml("query", { xmlns: MAM, queryid }, ...[
      Object.keys(fields).length ? xml("x", { xmlns: "jabber:x:data", type: "submit" }, xml("field", { var: "FORM_TYPE" }, xml("value", {}, MAM)),
        ...Object.entries(fields).map(([k, vs]) => xml("field", { var: k }, ...vs.map((v) => xml("value", {}, v))))) : undefined,
      max !== undefined ? xml("set", { xmlns: RSM }, xml("max", {}, String(max))) : undefined,
    ].filter((e) => e !== undefined))));
  const results = (c: Connected, queryid: string) => c.inbox.filter((s) => s.getChild("result", MAM)?.attrs.queryid === queryid);

  before(async () => {
    server = await startTestServer();
    for (const u of ["owner", "temp", "member", "guest", "outsider"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  it("a join ends with the subject: the creator of a new (locked) room gets an empty one, later joiners get presences, their own presence, history, then the subject", async () => {
    const owner = await login("owner");
    const room = "order@conference.localhost";
    const created = await join(owner, room, "boss");
    assert.deepEqual(created.map((s) => s.name), ["presence", "message"], "own presence (201), then the subject");
    assert.ok(codes(created[0]!).includes(201));
    assert.equal(created[1]!.getChildText("subject"), "", "§7.2.15: no subject set is an empty <subject/>");
    assert.equal(created[1]!.attrs.from, room);
    // A second resource of the owner joins the still locked room: the same ending.
    const ownerPhone = await login("owner", "phone");
    const second = await join(ownerPhone, room, "boss-phone");
    assert.ok(selfPresence(second), "the owner may enter its locked room");
    assert.equal(second[second.length - 1]!.name, "message");

    await configure(owner, room); // instant room: the default configuration
    await owner.xmpp.send(xml("message", { to: room, type: "groupchat" }, xml("subject", {}, "Order of events")));
    for (const i of [1, 2]) await owner.xmpp.send(xml("message", { to: room, type: "groupchat", id: `line${i}` }, xml("body", {}, `line ${i}`)));
    await owner.waitFor((s) => s.attrs.id === "line2" && s.attrs.type === "groupchat");
    const member = await login("member");
    const seen = await join(member, room, "member");
    const kinds = seen.map((s) => s.name === "presence" ? (codes(s).includes(110) ? "self" : `presence ${String(s.attrs.from).split("/")[1]}`)
      : s.getChild("body") ? `history ${s.getChildText("body")}` : `subject ${s.getChildText("subject")}`);
    assert.deepEqual(kinds, ["presence boss", "presence boss-phone", "self", "history line 1", "history line 2", "subject Order of events"]);
    // §7.2.15: the subject carries when it was set, from the room.
    const subject = seen[seen.length - 1]!;
    assert.equal(subject.getChild("delay", "urn:xmpp:delay")?.attrs.from, room);
    assert.ok(Date.parse(String(subject.getChild("delay", "urn:xmpp:delay")!.attrs.stamp)) <= Date.now());

    // A reserved room: the owner asks for the form before configuring; the join is complete all the same.
    const reserved = "reserved@conference.localhost";
    const fresh = await join(owner, reserved, "boss");
    assert.equal(fresh[fresh.length - 1]!.getChildText("subject"), "");
    await owner.iq(xml("iq", { type: "get", to: reserved }, xml("query", { xmlns: `${MUC}#owner` })));
    await configure(owner, reserved, { "muc#roomconfig_roomname": "Reserved" });
    const later = await join(member, reserved, "member");
    assert.deepEqual(later.map((s) => s.name), ["presence", "presence", "message"]);
    assert.equal(later[2]!.getChildText("subject"), "");
  });

  it("a moderator by role only neither makes moderators nor silences members (XEP-0045 §8.4, §8.5, §9.6)", async () => {
    const owner = clients[0]!;
    const room = "roles@conference.localhost";
    await join(owner, room, "boss");
    await configure(owner, room);
    await adminSet(owner, room, { jid: "member@localhost", affiliation: "member" });
    const temp = await login("temp");
    const member = clients.find((c) => c.jid.startsWith("member@"))!;
    const guest = await login("guest");
    await join(temp, room, "temp");
    await join(member, room, "member");
    await join(guest, room, "guest");
    await adminSet(owner, room, { nick: "temp", role: "moderator" });
    await temp.waitFor((s) => s.attrs.from === `${room}/temp` && s.getChild("x", MUC_USER)?.getChild("item")?.attrs.role === "moderator");

    assert.equal(await conditionOf(adminSet(temp, room, { nick: "guest", role: "moderator" })), "forbidden", "granting moderator status is for admins");
    assert.equal(await conditionOf(adminSet(temp, room, { nick: "member", role: "visitor" })), "not-allowed", "a member's voice is above an unaffiliated moderator");
    assert.equal(await conditionOf(adminSet(temp, room, { nick: "boss", role: "none" })), "not-allowed", "nor may it kick the owner");
    assert.equal(await conditionOf(adminSet(guest, room, { nick: "member", role: "visitor" })), "forbidden", "a participant changes no roles");
    const roles = await owner.iq(xml("iq", { type: "get", to: room }, xml("query", { xmlns: MUC_ADMIN }, xml("item", { role: "moderator" }))));
    assert.deepEqual(roles.getChild("query")!.getChildren("item").map((i) => i.attrs.nick).sort(), ["boss", "temp"], "nobody was promoted");
    const voiced = await owner.iq(xml("iq", { type: "get", to: room }, xml("query", { xmlns: MUC_ADMIN }, xml("item", { role: "participant" }))));
    assert.deepEqual(voiced.getChild("query")!.getChildren("item").map((i) => i.attrs.nick).sort(), ["guest", "member"], "nobody was silenced");
    // What the unaffiliated moderator may do: silence and kick the unaffiliated.
    await adminSet(temp, room, { nick: "guest", role: "visitor" });
    await guest.waitFor((s) => s.attrs.from === `${room}/guest` && s.getChild("x", MUC_USER)?.getChild("item")?.attrs.role === "visitor");

    // §17.4: an item with both a role and an affiliation is bad-request; §9.2: one refused item, no change at all.
    assert.equal(await conditionOf(adminSet(owner, room, { nick: "guest", jid: "guest@localhost", role: "none", affiliation: "outcast" })), "bad-request");
    assert.equal(await conditionOf(adminSet(owner, room, { jid: "guest@localhost", affiliation: "outcast" }, { jid: "owner@localhost", affiliation: "outcast" })), "conflict");
    const banned = await owner.iq(xml("iq", { type: "get", to: room }, xml("query", { xmlns: MUC_ADMIN }, xml("item", { affiliation: "outcast" }))));
    assert.deepEqual(banned.getChild("query")!.getChildren("item"), [], "the valid first item was not applied either");
    // Two owners cannot both be removed in one request when that leaves none.
    assert.equal(await conditionOf(adminSet(owner, room, { jid: "member@localhost", affiliation: "owner" }, { jid: "member@localhost", affiliation: "none" }, { jid: "owner@localhost", affiliation: "admin" })), "conflict");
    const owners = await owner.iq(xml("iq", { type: "get", to: room }, xml("query", { xmlns: MUC_ADMIN }, xml("item", { affiliation: "owner" }))));
    assert.deepEqual(owners.getChild("query")!.getChildren("item").map((i) => i.attrs.jid), ["owner@localhost"]);
    // An admin does not read the owner list (§10.8: forbidden in semi-anonymous rooms).
    await adminSet(owner, room, { jid: "member@localhost", affiliation: "admin" });
    assert.equal(await conditionOf(member.iq(xml("iq", { type: "get", to: room }, xml("query", { xmlns: MUC_ADMIN }, xml("item", { affiliation: "owner" }))))), "forbidden");
  });

  it("a password-protected room's archive is for those who may enter: not for outsiders without the password, nor for the banned", async () => {
    const owner = clients[0]!;
    const outsider = await login("outsider");
    const member = clients.find((c) => c.jid.startsWith("member@"))!;
    const room = "vault@conference.localhost";
    await join(owner, room, "boss");
    await configure(owner, room, { "muc#roomconfig_passwordprotectedroom": "1", "muc#roomconfig_roomsecret": "sesame" });
    await owner.xmpp.send(xml("message", { to: room, type: "groupchat", id: "secret-1" }, xml("body", {}, "the combination is 1234")));
    await owner.waitFor((s) => s.attrs.id === "secret-1" && s.attrs.type === "groupchat");

    assert.equal(await conditionOf(mamQuery(outsider, room, "peek")), "forbidden");
    assert.equal(results(outsider, "peek").length, 0, "not one message");
    // The owner needs no password (§7.2.5 admins and owners), and gets the archive.
    await mamQuery(owner, room, "own");
    assert.equal(results(owner, "own").length, 1);
    // Whoever joined with the password reads it, from any of their resources.
    const joined = await join(outsider, room, "visitor", [xml("password", {}, "sesame")]);
    assert.ok(selfPresence(joined));
    await mamQuery(outsider, room, "inside");
    assert.equal(results(outsider, "inside").length, 1);
    const otherResource = await login("outsider", "laptop");
    await mamQuery(otherResource, room, "laptop");
    assert.equal(results(otherResource, "laptop").length, 1);
    // Banned: out of the room and out of its archive.
    await adminSet(owner, room, { jid: "outsider@localhost", affiliation: "outcast" });
    assert.equal(await conditionOf(mamQuery(otherResource, room, "banned")), "forbidden");
    // A banned domain bans its users (§9.1 "<domain> … matches … any user@domain"): out they go, and they stay out.
    const guest = clients.find((c) => c.jid.startsWith("guest@"))!;
    await join(guest, room, "guest", [xml("password", {}, "sesame")]);
    await adminSet(owner, room, { jid: "localhost", affiliation: "outcast" });
    const out = await guest.waitFor((s) => s.attrs.from === `${room}/guest` && s.attrs.type === "unavailable");
    assert.ok(codes(out).includes(301));
    const refused = await join(member, room, "member", [xml("password", {}, "sesame")]);
    assert.ok(refused[0]!.getChild("error")?.getChild("forbidden", "urn:ietf:params:xml:ns:xmpp-stanzas"));
  });

  it("an outsider gets the same answer for a nick that is there and one that is not, whatever it sends to the occupant JID", async () => {
    const owner = clients[0]!;
    const member = clients.find((c) => c.jid.startsWith("member@") && c.jid.endsWith("/r"))!;
    const guest = clients.find((c) => c.jid.startsWith("guest@"))!;
    const room = "club@conference.localhost";
    await join(owner, room, "boss");
    await configure(owner, room, { "muc#roomconfig_membersonly": "1", "muc#roomconfig_passwordprotectedroom": "1", "muc#roomconfig_roomsecret": "club" });
    await adminSet(owner, room, { jid: "member@localhost", affiliation: "member" });
    await join(member, room, "alice", [xml("password", {}, "club")]);
    const ask = async (nick: string) => ({
      info: await conditionOf(guest.iq(xml("iq", { type: "get", to: `${room}/${nick}` }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })))),
      items: await conditionOf(guest.iq(xml("iq", { type: "get", to: `${room}/${nick}` }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items" })))),
      vcard: await conditionOf(guest.iq(xml("iq", { type: "get", to: `${room}/${nick}` }, xml("vCard", { xmlns: "vcard-temp" })))),
      ping: await conditionOf(guest.iq(xml("iq", { type: "get", to: `${room}/${nick}` }, xml("ping", { xmlns: "urn:xmpp:ping" })))),
      version: await conditionOf(guest.iq(xml("iq", { type: "get", to: `${room}/${nick}` }, xml("query", { xmlns: "jabber:iq:version" })))),
      kick: await conditionOf(adminSet(guest, room, { nick, role: "none" })),
    });
    const present = await ask("alice");
    const absent = await ask("nobody-here");
    assert.deepEqual(present, absent);
    // §6.6: disco to an occupant from a non-occupant "MUST return a bad-request error".
    assert.deepEqual(present, { info: "bad-request", items: "bad-request", vcard: "not-acceptable", ping: "not-acceptable", version: "not-acceptable", kick: "forbidden" });
    // Joining without the right password does not tell which nicks are taken (the password is checked first).
    await adminSet(owner, room, { jid: "guest@localhost", affiliation: "member" });
    const taken = await join(guest, room, "alice");
    const free = await join(guest, room, "someone-else");
    const errorOf = (stanzas: Element[]) => stanzas[0]!.getChild("error")!.children.map((c) => typeof c === "string" ? "" : c.name).filter(Boolean)[0];
    assert.equal(errorOf(taken), "not-authorized");
    assert.equal(errorOf(free), "not-authorized");
  });

  it("private messages carry the room's occupant-id, never the sender's, and no stanza-id forged for the room in any spelling", async () => {
    const owner = clients[0]!;
    const member = clients.find((c) => c.jid.startsWith("member@") && c.jid.endsWith("/r"))!;
    const room = "pm@conference.localhost";
    const ownJoin = selfPresence(await join(owner, room, "boss"))!;
    await configure(owner, room);
    await join(member, room, "member");
    await owner.xmpp.send(xml("message", { to: `${room}/member`, type: "chat", id: "forged-pm" }, xml("body", {}, "trust me"),
      xml("occupant-id", { xmlns: OCCUPANT_ID, id: "someone-else-entirely" }),
      xml("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "fake-1", by: "PM@CONFERENCE.LOCALHOST" }),
      xml("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "fake-2", by: "pm@conference.localhost." })));
    const pm = await member.waitFor((s) => s.attrs.id === "forged-pm");
    assert.equal(pm.attrs.from, `${room}/boss`);
    assert.deepEqual(pm.getChildren("occupant-id", OCCUPANT_ID).map((o) => o.attrs.id), [ownJoin.getChild("occupant-id", OCCUPANT_ID)!.attrs.id]);
    const sids = pm.getChildren("stanza-id", "urn:xmpp:sid:0");
    assert.deepEqual(sids.filter((s) => String(s.attrs.by).toLowerCase().replace(/\.$/, "") === room), [], "no id claims to come from the room");
    assert.deepEqual(sids.map((s) => s.attrs.by), ["member@localhost"], "the one id is the recipient's own archive's");
  });

  it("the room archive pages 'ids' queries too", async () => {
    const owner = clients[0]!;
    const room = "order@conference.localhost";
    await mamQuery(owner, room, "all");
    const ids = results(owner, "all").map((r) => r.getChild("result", MAM)!.attrs.id as string);
    assert.ok(ids.length >= 3);
    const fin = await mamQuery(owner, room, "two", { ids }, 2);
    assert.equal(results(owner, "two").length, 2);
    assert.equal(fin.getChild("fin", MAM)!.attrs.complete, undefined);
  });

  it("moderation (XEP-0425): the retracted text reaches no one who joins later, and rooms without an archive do not offer it", async () => {
    const owner = clients[0]!;
    const member = clients.find((c) => c.jid.startsWith("member@") && c.jid.endsWith("/r"))!;
    const guest = clients.find((c) => c.jid.startsWith("guest@"))!;
    const room = "moderated-history@conference.localhost";
    await join(owner, room, "boss");
    await configure(owner, room);
    await join(member, room, "member");
    await member.xmpp.send(xml("message", { to: room, type: "groupchat", id: "spam" }, xml("body", {}, "buy my potions")));
    const spam = await owner.waitFor((s) => s.attrs.id === "spam" && s.attrs.type === "groupchat");
    const stanzaId = spam.getChild("stanza-id", "urn:xmpp:sid:0")!.attrs.id as string;
    await owner.iq(xml("iq", { type: "set", to: room }, xml("moderate", { xmlns: "urn:xmpp:message-moderate:1", id: stanzaId },
      xml("retract", { xmlns: "urn:xmpp:message-retract:1" }), xml("reason", {}, "spam"))));
    const notice = await member.waitFor((s) => s.getChild("retract", "urn:xmpp:message-retract:1")?.attrs.id === stanzaId);
    assert.equal(notice.attrs.from, room, "only the room announces a moderation");
    const joined = await join(guest, room, "guest");
    const history = joined.filter((s) => s.name === "message" && s.getChild("delay", "urn:xmpp:delay"));
    assert.ok(history.length >= 1);
    for (const m of history) assert.equal(m.getChild("body"), undefined, "no history message carries the retracted text");
    const tombstone = history.find((m) => m.getChild("retracted", "urn:xmpp:message-retract:1"));
    assert.equal(tombstone?.attrs.from, `${room}/member`, "the tombstone keeps who and when");
    assert.ok(tombstone!.getChild("occupant-id", OCCUPANT_ID), "and the author's occupant id");

    const info = async (r: string) => (await owner.iq(xml("iq", { type: "get", to: r }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" }))))
      .getChild("query")!.getChildren("feature").map((f) => f.attrs.var);
    assert.ok((await info(room)).includes("urn:xmpp:message-moderate:1"));
    const unarchived = "unarchived@conference.localhost";
    await join(owner, unarchived, "boss");
    await configure(owner, unarchived, { mam: "0" });
    assert.ok(!(await info(unarchived)).includes("urn:xmpp:message-moderate:1"), "no stanza-ids to name a message by");
  });
});
