/**
 * XEP-0198 §5 across cluster nodes, without Redis (src/cluster/resumption.ts, and the counters and
 * queue a handed-over session is rebuilt from): which node to ask, the state on the wire with its
 * delivery confirmations as ids, and that the client's 'h' means the same stanzas on the new node.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { decodeSessionState, encodeSessionState, forwardingEntry, holderOf } from "../../src/cluster/resumption.js";
import type { DirectoryEntry } from "../../src/cluster/directory.js";
import type { SessionState } from "../../src/xmpp/c2s/handover.js";
import { AckError, StreamManagement } from "../../src/xmpp/c2s/sm.js";
import { OutboundQueue, type Outgoing } from "../../src/xmpp/c2s/outbound.js";

const stanza = (id: string, confirm?: (ok: boolean) => void): Outgoing => ({ name: "message", type: "chat", xml: `<message id='${id}'/>`, at: 1, ...(confirm ? { confirm } : {}) });

function state(queue: Outgoing[]): SessionState {
  return {
    jid: "u@h/phone", sid: "s1", sm: { id: "sm1", resumeTimeoutMs: 300_000, handled: 7, sent: 12, acked: 9 }, queue, written: 2,
    presence: "<presence><show>away</show></presence>", priority: -1, interested: true, flags: ["carbons"], directedPresence: ["room@muc.h/nick"],
    userAgentId: "d0a0a0a0-0000-4000-8000-000000000000", transport: "websocket",
  };
}

describe("resumption on another node", () => {
  it("asks the node whose entry of the user carries the XEP-0198 id, and no node for an unknown id", () => {
    const entries = new Map<string, DirectoryEntry>([
      ["u@h/desk", { node: "b", sid: "x", priority: 0 }],
      ["u@h/phone", { node: "c", sid: "y", priority: 0, resume: "sm1" }],
    ]);
    assert.equal(holderOf(entries, "sm1"), "c");
    assert.equal(holderOf(entries, "sm2"), undefined);
    assert.equal(holderOf(new Map(), "sm1"), undefined);
  });

  it("the state survives the wire; each confirmation becomes an id the new node answers", () => {
    const answers: string[] = [];
    const queue = [stanza("m1", (ok) => answers.push(`m1 ${ok}`)), stanza("m2"), stanza("m3", (ok) => answers.push(`m3 ${ok}`))];
    const ids = new Map<string, (ok: boolean) => void>();
    const text = encodeSessionState(state(queue), (confirm) => {
      const id = `a:${ids.size}`;
      ids.set(id, confirm);
      return id;
    });
    assert.equal(text.includes("function"), false);
    const answered: string[] = [];
    const back = decodeSessionState(text, (id) => (ok) => answered.push(`${id} ${ok}`))!;
    assert.deepEqual({ ...back, queue: [] }, { ...state([]), queue: [] });
    assert.deepEqual(back.queue.map((e) => [e.xml, e.name, e.type, e.at, e.confirm !== undefined]), [
      ["<message id='m1'/>", "message", "chat", 1, true], ["<message id='m2'/>", "message", "chat", 1, false], ["<message id='m3'/>", "message", "chat", 1, true],
    ]);
    back.queue[0]!.confirm!(true);
    back.queue[2]!.confirm!(false);
    assert.deepEqual(answered, ["a:0 true", "a:1 false"]);
    // What the old node does with those answers: the original confirmations run.
    for (const line of answered) {
      const [id, ok] = line.split(" ");
      ids.get(id!)!(ok === "true");
    }
    assert.deepEqual(answers, ["m1 true", "m3 false"]);
  });

  it("refuses what is not a state", () => {
    const good = JSON.parse(encodeSessionState(state([stanza("m1")]), () => "x")) as Record<string, unknown>;
    const none = () => () => {};
    assert.equal(decodeSessionState("not json", none), undefined);
    for (const broken of [
      { ...good, sm: { ...(good.sm as object), acked: 13 } },
      { ...good, written: 2, queue: [] },
      { ...good, transport: "pigeon" },
      { ...good, priority: 1.5 },
      { ...good, queue: [{ n: "message", at: 1 }] },
      { ...good, jid: undefined },
    ]) assert.equal(decodeSessionState(JSON.stringify(broken), none), undefined, JSON.stringify(broken).slice(0, 80));
  });

  it("the old node forwards to the new one under the new session id, with presence and flags", () => {
    const entry = forwardingEntry(state([]), "b");
    assert.deepEqual(entry, { node: "b", sid: "s1", priority: -1, transport: "websocket", resume: "sm1", presence: "<presence><show>away</show></presence>", flags: ["carbons"] });
  });

  it("restored counters take the client's 'h' as the old node would have", () => {
    const old = new StreamManagement(true, 1000);
    for (let i = 0; i < 5; i++) old.wrote();
    old.ack(2);
    old.handledInbound(old.receivedInbound());
    const moved = StreamManagement.restored(old.snapshot());
    assert.equal(moved.id, old.id);
    assert.equal(moved.resumable, true);
    assert.equal(moved.inboundH, 1);
    assert.equal(moved.unacknowledged, 3);
    assert.equal(moved.ack(4), 2);
    assert.throws(() => moved.ack(6), (e: unknown) => e instanceof AckError && e.sendCount === 5);
    // The next inbound stanza is counted after the ones the old node handled.
    moved.handledInbound(moved.receivedInbound());
    assert.equal(moved.inboundH, 2);
  });

  it("no snapshot while an inbound stanza is still being routed", () => {
    const sm = new StreamManagement(true, 1000);
    sm.receivedInbound();
    assert.throws(() => sm.snapshot());
  });

  it("a restored queue acknowledges its written entries first and writes everything again after a rewind", () => {
    const queue = new OutboundQueue();
    queue.retainWritten();
    queue.restore([stanza("w1"), stanza("w2"), stanza("u1")], 2);
    assert.equal(queue.unacknowledged, 2);
    assert.equal(queue.unwritten, 1);
    assert.deepEqual(queue.acknowledge(1).map((e) => e.xml), ["<message id='w1'/>"]);
    queue.rewind();
    const again: Array<[string, boolean]> = [];
    for (let next = queue.take(); next; next = queue.take()) again.push([next.entry.xml, next.first]);
    assert.deepEqual(again, [["<message id='w2'/>", false], ["<message id='u1'/>", true]]);
    assert.equal(queue.heldChars, "<message id='w2'/>".length + "<message id='u1'/>".length);
  });
});
