/** Group chat rooms on a cluster (docs/CLUSTER.md, "Rooms"): the placement rules, broadcast grouping, room bus entries, occupant records. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { HERE, RoomLeases, recipientsByNode } from "../../src/cluster/rooms.js";
import { decodeBusEntry, encodeBusEntry, type BusEntry } from "../../src/cluster/bus.js";
import { decodeOccupant, encodeOccupant, type Occupant } from "../../src/modules/muc/room.js";
import { parseJid } from "../../src/xmpp/jid.js";
import { el } from "../../src/xmpp/xml.js";

const ROOM = "lobby@conference.h";

describe("room leases", () => {
  it("a room nobody is known to host is asked of Redis; one this node took is handled here, synchronously", () => {
    const leases = new RoomLeases("a");
    assert.equal(leases.route(ROOM), undefined);
    assert.equal(leases.claimed(ROOM, "a"), HERE);
    assert.equal(leases.route(ROOM), HERE);
    assert.deepEqual(leases.hostedRooms(), [ROOM]);
  });

  it("a room another node holds is forwarded there, until that node dies", () => {
    const leases = new RoomLeases("a");
    assert.equal(leases.claimed(ROOM, "b"), "b");
    assert.equal(leases.route(ROOM), "b");
    assert.deepEqual(leases.displaceable(), []);
    leases.nodeDied("b");
    // Asked of Redis again, and a claim may displace the dead holder whose lease has not expired yet.
    assert.equal(leases.route(ROOM), undefined);
    assert.deepEqual(leases.displaceable(), ["b"]);
    leases.nodeAlive("b");
    assert.deepEqual(leases.displaceable(), [], "a node that restarted under its id holds its new leases");
  });

  it("a node never takes itself for dead", () => {
    const leases = new RoomLeases("a");
    leases.claimed(ROOM, "a");
    leases.nodeDied("a");
    assert.deepEqual(leases.displaceable(), []);
    assert.equal(leases.route(ROOM), HERE);
  });

  it("a lease found held by another node moves the room there", () => {
    const leases = new RoomLeases("a");
    leases.claimed(ROOM, "a");
    assert.equal(leases.claimed(ROOM, "c"), "c");
    assert.equal(leases.route(ROOM), "c");
    assert.deepEqual(leases.hostedRooms(), []);
  });

  it("renewal reports the rooms whose lease was lost, not those released meanwhile", () => {
    const leases = new RoomLeases("a");
    for (const room of ["r1@c.h", "r2@c.h", "r3@c.h"]) leases.claimed(room, "a");
    const renewing = leases.hostedRooms();
    leases.released("r3@c.h");
    assert.deepEqual(leases.renewed(renewing, [true, false, false]), ["r2@c.h"]);
    assert.deepEqual(leases.hostedRooms(), ["r1@c.h"]);
  });
});

describe("room broadcast by node", () => {
  it("groups recipients by their session's node: one list per node, local and unknown apart", () => {
    const where: Record<string, string | typeof HERE> = { "u1@h/x": HERE, "u2@h/x": "b", "u3@h/x": "c", "u4@h/x": "b" };
    const grouped = recipientsByNode(["u1@h/x", "u2@h/x", "u3@h/x", "u4@h/x", "u5@h/x"], (full) => where[full]);
    assert.deepEqual(grouped.local, ["u1@h/x"]);
    assert.deepEqual(grouped.unknown, ["u5@h/x"]);
    assert.deepEqual([...grouped.remote], [["b", ["u2@h/x", "u4@h/x"]], ["c", ["u3@h/x"]]]);
  });
});

describe("room bus entries", () => {
  it("round-trip: a stanza for a room's host, and a broadcast with its recipients", () => {
    const xml = el("message", { type: "groupchat", from: `${ROOM}/n` }, el("body", {}, "hi")).toString();
    for (const entry of [{ kind: "room", room: ROOM, xml }, { kind: "fanout", xml, to: ["u@h/1", "v@h/weird \"resource\""] }] satisfies BusEntry[]) {
      assert.deepEqual(decodeBusEntry(encodeBusEntry(entry)), entry);
    }
  });

  it("a broadcast whose recipient list is not a list of strings is not understood", () => {
    assert.equal(decodeBusEntry(["k", "fanout", "x", "<message/>", "to", "[1]"]), undefined);
    assert.equal(decodeBusEntry(["k", "fanout", "x", "<message/>", "to", "not json"]), undefined);
    assert.equal(decodeBusEntry(["k", "room", "x", "<message/>"]), undefined, "a room stanza names its room");
  });
});

describe("occupant records", () => {
  it("round-trip the occupant a next host needs: real JID, role, presence, occupant id", () => {
    const occupant: Occupant = { nick: "ann", jid: parseJid("ann@h/pc"), role: "moderator", presence: el("presence", {}, el("show", {}, "away")), occupantId: "oid" };
    const back = decodeOccupant("ann", encodeOccupant(occupant))!;
    assert.equal(back.jid.full, "ann@h/pc");
    assert.equal(back.role, "moderator");
    assert.equal(back.presence.getChildText("show"), "away");
    assert.equal(back.occupantId, "oid");
    assert.equal(back.nick, "ann");
  });

  it("a record with an unknown role or a bad JID is not an occupant", () => {
    assert.equal(decodeOccupant("x", JSON.stringify({ jid: "ann@h/pc", role: "king", presence: "<presence/>", occupantId: "o" })), undefined);
    assert.equal(decodeOccupant("x", JSON.stringify({ jid: "@@", role: "participant", presence: "<presence/>", occupantId: "o" })), undefined);
    assert.equal(decodeOccupant("x", "{"), undefined);
  });
});
