/** Which stanzas for remote servers the outbox keeps durable (src/xmpp/s2s/outbox.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { el } from "../../src/xmpp/xml.js";
import { keptDurable } from "../../src/xmpp/s2s/outbox.js";

describe("s2s outbox: what is kept durable", () => {
  it("messages a server would store offline: normal and chat (RFC 6121 §8.5.2.1.1)", () => {
    assert.equal(keptDurable(el("message", { to: "bob@b.test" })), true);
    assert.equal(keptDurable(el("message", { type: "normal" })), true);
    assert.equal(keptDurable(el("message", { type: "chat" })), true);
    for (const type of ["groupchat", "headline", "error"]) assert.equal(keptDurable(el("message", { type })), false, type);
  });

  it("subscription requests and answers; not availability (re-probed) nor IQs (answered by a timeout)", () => {
    for (const type of ["subscribe", "subscribed", "unsubscribe", "unsubscribed"]) assert.equal(keptDurable(el("presence", { type })), true, type);
    for (const type of [undefined, "unavailable", "probe", "error"]) assert.equal(keptDurable(el("presence", type ? { type } : {})), false, String(type));
    for (const type of ["get", "set", "result", "error"]) assert.equal(keptDurable(el("iq", { type })), false, type);
  });
});
