/** The stanza rate of an incoming s2s stream (src/xmpp/s2s/flood.ts), on an explicit clock. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { StanzaRate } from "../../src/xmpp/s2s/flood.js";

describe("s2s stanza rate (token bucket, sustained flood)", () => {
  it("a burst of two seconds' worth passes at once; then one token per 1/rate s", () => {
    const rate = new StanzaRate(10, 5000, 0);
    for (let i = 0; i < 20; i++) assert.equal(rate.take(0), true, `stanza ${i}`);
    assert.equal(rate.take(0), false);
    assert.equal(rate.waitMs(), 100);
    assert.equal(rate.take(99), false);
    assert.equal(rate.take(100), true);
    assert.equal(rate.take(100), false);
  });

  it("waiting stanzas are a flood only once the peer stayed over the rate longer than allowed", () => {
    const rate = new StanzaRate(10, 1000, 0);
    for (let i = 0; i < 20; i++) rate.take(0);
    assert.equal(rate.take(0), false, "the first one to wait");
    assert.equal(rate.flooding(1000), false, "at the limit, not over it");
    // The peer keeps every token busy: the bucket never refills.
    for (let t = 100; t <= 1100; t += 100) { rate.take(t); rate.take(t); }
    assert.equal(rate.flooding(1100), true);
  });

  it("a peer that slowed down (the bucket half full again) starts from zero", () => {
    const rate = new StanzaRate(10, 1000, 0);
    for (let i = 0; i < 21; i++) rate.take(0);
    assert.equal(rate.take(1000), true, "ten tokens later: half full");
    assert.equal(rate.flooding(1900), false);
    for (let i = 0; i < 9; i++) rate.take(1000);
    assert.equal(rate.take(1000), false, "waiting again");
    assert.equal(rate.flooding(1900), false, "counted from the new wait, not the first one");
    assert.equal(rate.flooding(2100), true);
  });
});
