/** XEP-0198 counters: custody-ordered 'h', queue acks, wrap-around, over-acknowledgement. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AckError, StreamManagement, parseH } from "../../src/xmpp/c2s/sm.js";
import { el } from "../../src/xmpp/xml.js";

describe("stream management counters", () => {
  it("inbound h advances only over the prefix of stanzas in custody", () => {
    const sm = new StreamManagement(true, 1000);
    const [a, b, c] = [sm.receivedInbound(), sm.receivedInbound(), sm.receivedInbound()];
    assert.equal(sm.handledInbound(b), false);
    assert.equal(sm.inboundH, 0, "b is done but a is not: nothing to report yet");
    assert.equal(sm.handledInbound(a), true);
    assert.equal(sm.inboundH, 2);
    sm.handledInbound(c);
    assert.equal(sm.inboundH, 3);
  });

  it("acks drop acknowledged stanzas in order and refuse more than was sent", () => {
    const sm = new StreamManagement(false, 0);
    for (let i = 0; i < 5; i++) sm.sentOutbound(el("message", { id: String(i) }));
    assert.deepEqual(sm.ack(2).map((u) => u.stanza.attrs.id), ["0", "1"]);
    assert.deepEqual(sm.ack(2), [], "a repeated ack changes nothing");
    assert.deepEqual(sm.unacked.map((u) => u.stanza.attrs.id), ["2", "3", "4"]);
    assert.throws(() => sm.ack(6), (e: unknown) => e instanceof AckError && e.h === 6 && e.sendCount === 5);
    assert.equal(sm.ack(5).length, 3);
  });

  it("h wraps at 2^32", () => {
    const sm = new StreamManagement(false, 0);
    const internal = sm as unknown as { sent: number; acked: number; handled: number; received: number };
    internal.sent = internal.acked = 2 ** 32 - 2;
    internal.handled = internal.received = 2 ** 32 - 1;
    for (let i = 0; i < 4; i++) sm.sentOutbound(el("message", { id: String(i) }));
    assert.equal(sm.ack(1).length, 3, "2^32 - 2 → 1 acknowledges three stanzas across the wrap");
    sm.handledInbound(sm.receivedInbound());
    assert.equal(sm.inboundH, 0);
  });

  it("parses h strictly", () => {
    assert.equal(parseH("0"), 0);
    assert.equal(parseH("4294967295"), 4294967295);
    for (const bad of [undefined, "", "-1", "1.5", "0x10", "4294967296", "12345678901", " 1"]) assert.equal(parseH(bad), undefined);
  });
});
