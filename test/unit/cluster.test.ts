/** The cluster's pure rules (docs/CLUSTER.md): directory replica, dead nodes, bus entries, confirmations, config. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { DirectoryReplica, deadNodes, decodeEntry, encodeEntry, type DirectoryEntry } from "../../src/cluster/directory.js";
import { PendingAnswers, decodeBusEntry, encodeBusEntry, type BusEntry } from "../../src/cluster/bus.js";
import { ClusterSessionTable, type RemoteSender } from "../../src/cluster/sessions.js";
import { RequestIds } from "../../src/cluster/replies.js";
import { notifyFlagsChange } from "../../src/modules/pep.js";
import { ConfigError, parseConfig } from "../../src/config.js";
import { el } from "../../src/xmpp/xml.js";

const TUNE = "http://jabber.org/protocol/tune";
const entry = (node: string, sid: string, priority = 0, presence?: string): DirectoryEntry => ({ node, sid, priority, ...(presence ? { presence } : {}) });

describe("directory replica", () => {
  it("keeps other nodes' sessions by user, and never this node's", () => {
    const r = new DirectoryReplica("a");
    r.apply({ op: "set", full: "u@h/1", entry: entry("b", "s1") });
    r.apply({ op: "set", full: "u@h/2", entry: entry("a", "s2") });
    assert.deepEqual([...r.ofUser("u@h").keys()], ["u@h/1"]);
    assert.equal(r.get("u@h/1")?.node, "b");
    assert.equal(r.get("u@h/2"), undefined);
  });

  it("a full JID bound on this node removes the entry another node had for it", () => {
    const r = new DirectoryReplica("a");
    r.apply({ op: "set", full: "u@h/1", entry: entry("b", "s1") });
    r.apply({ op: "set", full: "u@h/1", entry: entry("a", "s2") });
    assert.equal(r.get("u@h/1"), undefined);
    assert.equal(r.ofUser("u@h").size, 0);
  });

  it("deletes only the entry of the session that asked (compare-and-delete on the session id)", () => {
    const r = new DirectoryReplica("a");
    r.apply({ op: "set", full: "u@h/1", entry: entry("b", "old") });
    r.apply({ op: "set", full: "u@h/1", entry: entry("c", "new") });
    r.apply({ op: "del", full: "u@h/1", sid: "old" });
    assert.equal(r.get("u@h/1")?.sid, "new");
    r.apply({ op: "del", full: "u@h/1", sid: "new" });
    assert.equal(r.get("u@h/1"), undefined);
  });

  it("a dead node's sessions go at once and stay gone after a reload; a node that writes again is alive", () => {
    const changed: string[] = [];
    const r = new DirectoryReplica("a", (full) => changed.push(full));
    r.apply({ op: "set", full: "u@h/1", entry: entry("b", "s1") });
    r.apply({ op: "set", full: "u@h/2", entry: entry("c", "s2") });
    r.apply({ op: "set", full: "v@h/1", entry: entry("b", "s3") });
    changed.length = 0;
    assert.deepEqual(r.nodeDied("b").map(([full]) => full).sort(), ["u@h/1", "v@h/1"]);
    assert.deepEqual(changed.sort(), ["u@h/1", "v@h/1"]);
    assert.deepEqual([...r.ofUser("u@h").keys()], ["u@h/2"]);
    assert.equal(r.ofUser("v@h").size, 0);
    r.reset([["u@h/1", entry("b", "s1")], ["u@h/2", entry("c", "s2")]]);
    assert.equal(r.get("u@h/1"), undefined);
    r.apply({ op: "set", full: "u@h/3", entry: entry("b", "s4") });
    assert.equal(r.get("u@h/3")?.node, "b");
    assert.deepEqual(r.countByNode(), new Map([["c", 1], ["b", 1]]));
  });

  it("entries survive encoding; anything else is refused", () => {
    const e: DirectoryEntry = { node: "b", sid: "s", priority: 5, presence: "<presence/>", transport: "websocket", flags: ["carbons"], interested: true };
    assert.deepEqual(decodeEntry(encodeEntry(e)), e);
    assert.equal(decodeEntry(JSON.stringify({ ...e, interested: "yes" }))?.interested, undefined);
    assert.equal(decodeEntry("{\"node\":1}"), undefined);
    assert.equal(decodeEntry("not json"), undefined);
  });
});

describe("dead nodes", () => {
  it("are the members without a heartbeat and the nodes seen alive that left the member set, never this node", () => {
    assert.deepEqual(deadNodes("a", ["a", "b", "c"], [false, true, false], new Set()), ["c"]);
    assert.deepEqual(deadNodes("a", ["a", "b"], [true, true], new Set(["b", "d"])), ["d"]);
    assert.deepEqual(deadNodes("a", [], [], new Set(["a"])), []);
  });
});

describe("node bus entries", () => {
  it("survive encoding, and unknown or incomplete ones are refused", () => {
    const entries: BusEntry[] = [
      { kind: "stanza", to: "u@h/r", sid: "s", xml: "<message/>" },
      { kind: "confirm", to: "u@h/r", sid: "s", xml: "<message/>", replyTo: "a", id: "a:1" },
      { kind: "confirmed", id: "a:1", ok: true },
      { kind: "confirmed", id: "a:2", ok: false },
      { kind: "kick", to: "u@h/r", sid: "s", condition: "conflict" },
      { kind: "handover", user: "u@h", smId: "sm1", replyTo: "b", id: "b:h:0" },
      { kind: "handed", id: "b:h:0", state: "{}" },
      { kind: "handed", id: "b:h:1", state: undefined },
      { kind: "reply", xml: "<iq type='result' id='parley:a:x'/>" },
    ];
    for (const e of entries) assert.deepEqual(decodeBusEntry(encodeBusEntry(e)), e);
    assert.equal(decodeBusEntry(["k", "stanza", "to", "u@h/r"]), undefined);
    assert.equal(decodeBusEntry(["k", "what"]), undefined);
    assert.equal(decodeBusEntry(["k", "reply"]), undefined);
  });

  it("request ids name the asking node; only another node's ids are forwarded", () => {
    const a = new RequestIds("node-a:1");
    const b = new RequestIds("b");
    const id = a.next();
    assert.notEqual(a.next(), id);
    assert.equal(b.otherOwner(id), "node-a:1");
    assert.equal(a.otherOwner(id), undefined);
    assert.equal(b.otherOwner("parley-xyz"), undefined);
    assert.equal(b.otherOwner("parley::x"), undefined);
    assert.equal(b.otherOwner(undefined), undefined);
  });

  it("answers settle once, synchronously, and fail when the node that owes them dies", () => {
    const p = new PendingAnswers<boolean>("a", false);
    const answers: string[] = [];
    const one = p.add("b", (ok) => answers.push(`one ${ok}`));
    const two = p.add("b", (ok) => answers.push(`two ${ok}`));
    const three = p.add("c", (ok) => answers.push(`three ${ok}`));
    assert.notEqual(one, two);
    assert.equal(p.settle(one, true), true);
    assert.deepEqual(answers, ["one true"], "the answer runs before settle returns");
    assert.equal(p.settle(one, false), false);
    assert.equal(p.failNode("b"), 1);
    assert.equal(p.size, 1);
    p.settle(three, true);
    assert.deepEqual(answers, ["one true", "two false", "three true"]);
  });
});

describe("cluster session table", () => {
  const sent: string[] = [];
  const sender: RemoteSender = {
    send: (node, to, sid, xml) => { sent.push(`${node} ${to} ${sid} ${xml}`); },
    sendConfirmed: async () => true,
    kick: (node, to, sid, condition) => { sent.push(`kick ${node} ${to} ${sid} ${condition}`); },
  };

  it("answers for remote sessions with stable objects that read presence from the replica and send on the bus", () => {
    const table = new ClusterSessionTable();
    const replica = new DirectoryReplica("a", (full) => table.changed(full));
    table.connect(replica, sender);
    replica.apply({ op: "set", full: "u@h/1", entry: entry("b", "s1", 3, "<presence><priority>3</priority></presence>") });
    const remote = table.get("u@h/1")!;
    assert.equal(table.get("u@h/1"), remote);
    assert.equal(remote.priority, 3);
    assert.equal(remote.presence?.getChildText("priority"), "3");
    assert.deepEqual(table.available("u@h"), [remote]);
    replica.apply({ op: "set", full: "u@h/1", entry: entry("b", "s1", 1) });
    assert.equal(table.get("u@h/1"), remote);
    assert.equal(remote.priority, 1);
    assert.equal(remote.presence, undefined);
    assert.deepEqual(table.available("u@h"), []);
    assert.equal(remote.interested, false);
    replica.apply({ op: "set", full: "u@h/1", entry: { ...entry("b", "s1", 1), interested: true, flags: [`${TUNE}+notify`] } });
    assert.equal(remote.interested, true, "roster interest as its node wrote it");
    assert.equal(remote.flags.has(`${TUNE}+notify`), true);
    replica.apply({ op: "set", full: "u@h/1", entry: entry("b", "s1", 1) });
    remote.send(el("message", { to: "u@h/1" }));
    assert.deepEqual(sent, [`b u@h/1 s1 ${el("message", { to: "u@h/1" }).toString()}`]);
    replica.apply({ op: "set", full: "u@h/1", entry: entry("c", "s9") });
    assert.notEqual(table.get("u@h/1"), remote);
    assert.equal(table.count(), 0);
  });
});

describe("PEP +notify flags (XEP-0163 §4)", () => {
  it("hold exactly the +notify features of the caps; other flags stay", () => {
    const flags = new Set(["carbons", `${TUNE}+notify`, "urn:xmpp:avatar:metadata+notify"]);
    const change = notifyFlagsChange(flags, new Set([`${TUNE}+notify`, "urn:xmpp:mood+notify", "urn:xmpp:receipts"]));
    assert.deepEqual(change, { added: ["urn:xmpp:mood+notify"], removed: ["urn:xmpp:avatar:metadata+notify"] });
    assert.deepEqual(notifyFlagsChange(new Set(["carbons"]), new Set()), { added: [], removed: [] });
  });
});

describe("cluster configuration", () => {
  const cluster = { nodeId: "n1", redisUrl: "redis://127.0.0.1:6379" };
  for (const storage of [{ driver: "sqlite" }, { driver: "memory" }]) {
    it(`refuses ${storage.driver} storage`, () => {
      assert.throws(() => parseConfig({ storage, cluster }), (err: unknown) => err instanceof ConfigError && err.problems.length === 1
        && err.problems[0] === `cluster: needs storage.driver: postgres (shared by every node), not ${storage.driver}`);
    });
  }
  it("takes postgres storage with defaults for the timing", () => {
    const c = parseConfig({ storage: { driver: "postgres", url: "postgres://x@127.0.0.1/test" }, cluster });
    assert.deepEqual(c.cluster, { ...cluster, keyPrefix: "parley", heartbeatSeconds: 2, nodeTimeoutSeconds: 10 });
  });
  it("refuses a node timeout shorter than two heartbeats", () => {
    assert.throws(() => parseConfig({ storage: { driver: "postgres", url: "postgres://x@127.0.0.1/test" }, cluster: { ...cluster, heartbeatSeconds: 5, nodeTimeoutSeconds: 6 } }), ConfigError);
  });
});
