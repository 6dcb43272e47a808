/** XEP-0198 counters and the outbound queue: custody-ordered 'h', acks, resends, wrap-around, over-acknowledgement. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AckError, StreamManagement, parseH } from "../../src/xmpp/c2s/sm.js";
import { OutboundQueue } from "../../src/xmpp/c2s/outbound.js";

const entry = (id: string) => ({ name: "message", type: undefined, xml: `<message id='${id}'/>`, at: 0 });
const ids = (xs: Array<{ xml: string }>) => xs.map((x) => /id='([^']+)'/.exec(x.xml)![1]);

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

  it("an <r/> is answered once what came before it is in custody, not what came after", () => {
    const sm = new StreamManagement(true, 1000);
    const answered: number[] = [];
    sm.whenReceivedHandled(() => answered.push(sm.inboundH));
    assert.deepEqual(answered, [0], "nothing in flight: answered at once");
    const [a, b] = [sm.receivedInbound(), sm.receivedInbound()];
    sm.whenReceivedHandled(() => answered.push(sm.inboundH));
    const c = sm.receivedInbound();
    sm.whenReceivedHandled(() => answered.push(sm.inboundH));
    sm.handledInbound(b);
    assert.deepEqual(answered, [0], "b is done out of order: a still holds the first request");
    sm.handledInbound(a);
    assert.deepEqual(answered, [0, 2], "a and b are in custody; c (sent after the request) is not waited for");
    sm.handledInbound(c);
    assert.deepEqual(answered, [0, 2, 3]);
    assert.equal(sm.allHandled, true);
  });

  it("acks count what was written and refuse more than that", () => {
    const sm = new StreamManagement(false, 0);
    for (let i = 0; i < 5; i++) sm.wrote();
    assert.equal(sm.ack(2), 2);
    assert.equal(sm.ack(2), 0, "a repeated ack changes nothing");
    assert.equal(sm.unacknowledged, 3);
    assert.throws(() => sm.ack(6), (e: unknown) => e instanceof AckError && e.h === 6 && e.sendCount === 5);
    assert.equal(sm.ack(5), 3);
  });

  it("h wraps at 2^32", () => {
    const sm = new StreamManagement(false, 0);
    const internal = sm as unknown as { sent: number; acked: number; handled: number; received: number };
    internal.sent = internal.acked = 2 ** 32 - 2;
    internal.handled = internal.received = 2 ** 32 - 1;
    for (let i = 0; i < 4; i++) sm.wrote();
    assert.equal(sm.ack(1), 3, "2^32 - 2 → 1 acknowledges three stanzas across the wrap");
    sm.handledInbound(sm.receivedInbound());
    assert.equal(sm.inboundH, 0);
  });

  it("parses h strictly", () => {
    assert.equal(parseH("0"), 0);
    assert.equal(parseH("4294967295"), 4294967295);
    for (const bad of [undefined, "", "-1", "1.5", "0x10", "4294967296", "12345678901", " 1"]) assert.equal(parseH(bad), undefined);
  });
});

describe("outbound queue", () => {
  it("without stream management, a written entry is gone", () => {
    const q = new OutboundQueue();
    q.push(entry("a"));
    q.push(entry("b"));
    assert.equal(q.heldChars, entry("a").xml.length * 2);
    assert.deepEqual(ids([q.take()!.entry]), ["a"]);
    assert.equal(q.unwritten, 1);
    assert.equal(q.heldChars, entry("b").xml.length);
    assert.deepEqual(ids(q.drain()), ["b"]);
  });

  it("with stream management, written entries wait for their ack; a rewind writes them again, counted once", () => {
    const q = new OutboundQueue();
    q.retainWritten();
    for (const id of ["a", "b", "c"]) q.push(entry(id));
    assert.equal(q.take()!.first, true);
    assert.equal(q.take()!.first, true);
    assert.equal(q.unacknowledged, 2);
    assert.equal(q.unwritten, 1);
    assert.deepEqual(ids(q.acknowledge(1)), ["a"]);
    q.rewind();
    const again = q.take()!;
    assert.deepEqual([ids([again.entry])[0], again.first], ["b", false], "b is resent, not counted again");
    const fresh = q.take()!;
    assert.deepEqual([ids([fresh.entry])[0], fresh.first], ["c", true]);
    assert.equal(q.take(), undefined);
    assert.deepEqual(ids(q.acknowledge(5)), ["b", "c"], "never more than was written");
    assert.equal(q.heldChars, 0);
  });

  it("counts what it holds, written or not", () => {
    const q = new OutboundQueue();
    q.retainWritten();
    q.push(entry("a"));
    q.push(entry("b"));
    q.take();
    assert.equal(q.heldChars, entry("a").xml.length * 2);
    assert.deepEqual(ids(q.drain()), ["a", "b"]);
    assert.equal(q.heldChars, 0);
  });
});
