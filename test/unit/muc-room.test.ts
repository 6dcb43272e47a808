/** The MUC module's pure parts without sockets: room state, the presence about an occupant, the configuration form. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { el } from "../../src/xmpp/xml.js";
import { parseJid } from "../../src/xmpp/jid.js";
import { buildForm } from "../../src/xmpp/forms.js";
import { createMemoryStorage } from "../../src/storage/memory/index.js";
import { MUC_USER, ROOMCONFIG, RoomDirectory, defaultConfig, encodeOccupant, type Occupant, type Room } from "../../src/modules/muc/room.js";
import { occupantPresence, ownPresence, seesPresence } from "../../src/modules/muc/occupant-presence.js";
import { applyConfigForm, configForm } from "../../src/modules/muc/config-form.js";
import type { Role } from "../../src/modules/muc/rules.js";
import { LocalRoomPlacement, type RoomPlacement } from "../../src/placement.js";
import { SessionTable } from "../../src/xmpp/sessions.js";
import { Router } from "../../src/xmpp/router.js";
import { HookBus } from "../../src/hooks.js";
import { silentLogger } from "../../src/log.js";

const sessions = new SessionTable();
const singleNode = new LocalRoomPlacement(sessions, new Router(["localhost"], new HookBus(silentLogger()), sessions, createMemoryStorage().accounts, silentLogger()));

const submit = (fields: Record<string, string>, formType = ROOMCONFIG) =>
  buildForm("submit", formType, Object.entries(fields).map(([name, value]) => ({ var: name, values: [value] })));

function roomWith(...occupants: Array<[nick: string, jid: string, role: Role]>): Room {
  const room: Room = { jid: "lobby@conference.localhost", config: defaultConfig(100), subject: undefined, locked: false, createdAt: 0, occupants: new Map(), nicks: new Map(), affiliations: new Map(), avatarHash: "" };
  for (const [nick, jid, role] of occupants) {
    const occupant: Occupant = { nick, jid: parseJid(jid), role, presence: el("presence", { id: "p1" }, el("show", {}, "away")), occupantId: `id-${nick}` };
    room.occupants.set(nick, occupant);
    room.nicks.set(jid, nick);
  }
  return room;
}

describe("MUC configuration form (XEP-0045 §10.2)", () => {
  it("shows the current configuration and reads a submitted one back, with the status codes of what changed", () => {
    const shown = configForm({ ...defaultConfig(100), name: "Lobby" });
    const field = (name: string) => shown.getChildren("field").find((f) => f.attrs.var === name)?.getChildText("value");
    assert.equal(field("FORM_TYPE"), ROOMCONFIG);
    assert.equal(field("muc#roomconfig_roomname"), "Lobby");
    const { config, changes } = applyConfigForm(defaultConfig(100), submit({ "muc#roomconfig_whois": "anyone", mam: "0", "muc#roomconfig_maxusers": "5000", "muc#roomconfig_roomsecret": "s3cret" }), 100);
    // §10.2.1: 172 "now non-anonymous", 171 "now not logging".
    assert.deepEqual(changes.sort(), ["171", "172"]);
    assert.equal(config.whois, "anyone");
    assert.equal(config.archiving, false);
    assert.equal(config.maxUsers, 100, "capped at the service's maximum");
    assert.equal(config.password, "s3cret");
    assert.equal(applyConfigForm(config, submit({ "muc#roomconfig_passwordprotectedroom": "0" }), 100).config.password, "");
  });

  it("refuses a form it cannot apply and leaves the configuration as it was", () => {
    const current = defaultConfig(100);
    assert.throws(() => applyConfigForm(current, submit({ "muc#roomconfig_whois": "everyone" }), 100), { condition: "not-acceptable" });
    assert.throws(() => applyConfigForm(current, submit({ "muc#roomconfig_maxusers": "-1" }), 100), { condition: "not-acceptable" });
    assert.throws(() => applyConfigForm(current, submit({}, "urn:example:other"), 100), { condition: "bad-request" });
    assert.deepEqual(current, defaultConfig(100));
  });
});

describe("presence about an occupant (XEP-0045 §7.2)", () => {
  const room = roomWith(["mod", "mod@localhost/a", "moderator"], ["pat", "pat@localhost/b", "participant"], ["vis", "vis@localhost/c", "participant"]);
  const [mod, pat, vis] = ["mod", "pat", "vis"].map((n) => room.occupants.get(n)!) as [Occupant, Occupant, Occupant];
  const item = (p: ReturnType<typeof occupantPresence>) => p.getChild("x", MUC_USER)!.getChild("item")!;
  const codes = (p: ReturnType<typeof occupantPresence>) => p.getChild("x", MUC_USER)!.getChildren("status").map((s) => s.attrs.code);

  it("carries the occupant's own presence, from its occupant JID, with its occupant id; 110 only to itself", () => {
    const toOther = occupantPresence(room, pat, vis);
    assert.equal(toOther.attrs.from, "lobby@conference.localhost/pat");
    assert.equal(toOther.attrs.to, "vis@localhost/c");
    assert.equal(toOther.getChildText("show"), "away");
    assert.equal(toOther.getChild("occupant-id", "urn:xmpp:occupant-id:0")?.attrs.id, "id-pat");
    assert.deepEqual(codes(toOther), []);
    assert.deepEqual(codes(occupantPresence(room, pat, pat, { codes: [170] })), ["170", "110"]);
  });

  it("shows the real JID in a semi-anonymous room to moderators only (§7.2.4)", () => {
    assert.equal(item(occupantPresence(room, pat, vis)).attrs.jid, undefined);
    assert.equal(item(occupantPresence(room, pat, mod)).attrs.jid, "pat@localhost/b");
  });

  it("an unavailable presence drops the occupant's own presence and id; the item says what changed", () => {
    const kicked = occupantPresence(room, pat, mod, { type: "unavailable", codes: [307], item: { role: "none" }, children: [el("reason", {}, "spam")] });
    assert.equal(kicked.attrs.type, "unavailable");
    assert.equal(kicked.attrs.id, undefined);
    assert.equal(kicked.getChild("show"), undefined);
    assert.equal(item(kicked).attrs.role, "none");
    assert.equal(item(kicked).getChildText("reason"), "spam");
  });

  it("beyond the broadcast limit, ordinary occupants' changes go to themselves and moderators only", () => {
    assert.equal(seesPresence(room, vis, pat, 10), true);
    assert.equal(seesPresence(room, vis, pat, 2), false);
    assert.equal(seesPresence(room, mod, pat, 2), true);
    assert.equal(seesPresence(room, vis, mod, 2), true);
    assert.equal(seesPresence(room, pat, pat, 2), true);
  });

  it("the presence the room keeps has no muc elements of the client's", () => {
    const kept = ownPresence(el("presence", {}, el("x", { xmlns: "http://jabber.org/protocol/muc" }), el("occupant-id", { xmlns: "urn:xmpp:occupant-id:0", id: "forged" }), el("status", {}, "hi")));
    assert.deepEqual(kept.children.map((c) => (typeof c === "string" ? c : c.name)), ["status"]);
  });
});

describe("room directory", () => {
  it("a temporary room is gone when its last occupant leaves; a persistent one comes back from storage", async () => {
    const storage = createMemoryStorage();
    const rooms = new RoomDirectory(storage, 100, singleNode, async () => {});
    const temporary = rooms.create("tmp@conference.localhost", "alice@localhost");
    assert.equal(temporary.locked, true);
    assert.equal(temporary.affiliations.get("alice@localhost")?.affiliation, "owner");
    await rooms.unloadIfEmpty(temporary);
    assert.equal(await rooms.load("tmp@conference.localhost"), undefined);

    const kept = rooms.create("kept@conference.localhost", "alice@localhost");
    kept.config = { ...kept.config, persistent: true, name: "Kept" };
    kept.locked = false;
    await rooms.save(kept);
    await rooms.unloadIfEmpty(kept);
    assert.equal(rooms.inMemory("kept@conference.localhost"), undefined);
    const again = await rooms.load("kept@conference.localhost");
    assert.equal(again?.config.name, "Kept");
    assert.deepEqual((await rooms.list("conference.localhost")).map((r) => r.jid), ["kept@conference.localhost"]);
  });
});

/** The occupant record of a cluster placement, in memory: what the Redis hash per room holds. */
class RecordedOccupants implements RoomPlacement {
  readonly shared = true;
  readonly records = new Map<string, Map<string, string>>();
  readonly released: string[] = [];
  watch(): void {}
  admit(): true { return true; }
  broadcast(): void {}
  occupants(room: string): ReadonlyMap<string, string> { return this.records.get(room) ?? new Map(); }
  recordOccupant(room: string, nick: string, record: string): void {
    if (!this.records.has(room)) this.records.set(room, new Map());
    this.records.get(room)!.set(nick, record);
  }
  forgetOccupant(room: string, nick: string): void { this.records.get(room)?.delete(nick); }
  release(room: string, forget: boolean): void {
    this.released.push(room);
    if (forget) this.records.delete(room);
  }
}

describe("room directory on a cluster (a shared placement)", () => {
  const occupant = (nick: string, jid: string): Occupant => ({ nick, jid: parseJid(jid), role: "participant", presence: el("presence"), occupantId: `id-${nick}` });

  it("a temporary room is stored while it exists, so that a node taking it over finds it", async () => {
    const storage = createMemoryStorage();
    const placement = new RecordedOccupants();
    const rooms = new RoomDirectory(storage, 100, placement, async () => {});
    const room = rooms.create("tmp@conference.localhost", "alice@localhost");
    await rooms.share(room);
    assert.equal(rooms.stored(room), true);
    assert.equal((await storage.rooms.get("tmp@conference.localhost"))?.jid, "tmp@conference.localhost");
    assert.deepEqual((await storage.rooms.affiliations("tmp@conference.localhost")).map((a) => [a.jid, a.affiliation]), [["alice@localhost", "owner"]]);
    await rooms.unloadIfEmpty(room);
    assert.equal(await storage.rooms.get("tmp@conference.localhost"), undefined, "forgotten with its last occupant, as on one node");
    assert.deepEqual(placement.released, ["tmp@conference.localhost"]);
  });

  it("the next host loads the recorded occupants; those whose sessions are gone leave, and a room left empty is gone", async () => {
    const storage = createMemoryStorage();
    const placement = new RecordedOccupants();
    const first = new RoomDirectory(storage, 100, placement, async () => {});
    const room = first.create("lobby@conference.localhost", "alice@localhost");
    room.locked = false;
    await first.share(room);
    for (const o of [occupant("stays", "bob@localhost/pc"), occupant("vanished", "carol@localhost/pc")]) placement.recordOccupant(room.jid, o.nick, encodeOccupant(o));

    // The host died: another node's directory loads the room. Carol's session was on the dead host.
    const adopted: string[][] = [];
    const next = new RoomDirectory(storage, 100, placement, async (r) => {
      adopted.push([...r.occupants.keys()]);
      for (const o of [...r.occupants.values()]) {
        if (o.jid.bare !== "carol@localhost") continue;
        r.occupants.delete(o.nick);
        r.nicks.delete(o.jid.full);
        placement.forgetOccupant(r.jid, o.nick);
        await next.unloadIfEmpty(r);
      }
    });
    const loaded = await next.load("lobby@conference.localhost");
    assert.deepEqual(adopted, [["stays", "vanished"]]);
    assert.deepEqual([...loaded!.occupants.keys()], ["stays"]);
    assert.equal(loaded!.nicks.get("bob@localhost/pc"), "stays");
    assert.equal(loaded!.occupants.get("stays")?.occupantId, "id-stays");

    // Everyone recorded is gone: the temporary room with them.
    const emptyPlacement = new RecordedOccupants();
    const alone = new RoomDirectory(storage, 100, emptyPlacement, async (r) => {
      for (const o of [...r.occupants.values()]) {
        r.occupants.delete(o.nick);
        r.nicks.delete(o.jid.full);
        emptyPlacement.forgetOccupant(r.jid, o.nick);
      }
      await alone.unloadIfEmpty(r);
    });
    const other = first.create("gone@conference.localhost", "alice@localhost");
    await first.share(other);
    emptyPlacement.recordOccupant(other.jid, "vanished", encodeOccupant(occupant("vanished", "carol@localhost/pc")));
    assert.equal(await alone.load("gone@conference.localhost"), undefined);
    assert.equal(await storage.rooms.get("gone@conference.localhost"), undefined);
  });
});
