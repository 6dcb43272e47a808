/** shareChildren: fan-out copies serialize exactly like ordinary elements. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { el, cloneElement, shareChildren, settle, serialize } from "../../src/xmpp/xml.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";

describe("shareChildren", () => {
  const template = el("message", { from: "room@conference.localhost/a", type: "groupchat", id: "x&1" },
    el("body", {}, "fish & <chips> \"quoted\""), "loose text & more", el("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "1", by: "room@conference.localhost" }));
  it("writes the same bytes as a normal copy, with its own attributes", () => {
    const copyFor = shareChildren(template);
    for (const to of ["a@localhost/r", "b&c@localhost/x'y"]) {
      const normal = cloneElement(template);
      normal.attrs.to = to;
      assert.equal(copyFor({ ...template.attrs, to }).toString(), normal.toString());
    }
  });
  it("a copy whose children change serializes the change", () => {
    const copy = shareChildren(template)({ ...template.attrs, to: "a@localhost" });
    copy.cnode(el("delay", { xmlns: "urn:xmpp:delay", stamp: "2026-01-01T00:00:00Z" }));
    assert.match(copy.toString(), /<delay xmlns="urn:xmpp:delay" stamp="2026-01-01T00:00:00Z"\/><\/message>$/);
    assert.doesNotMatch(template.toString(), /delay/, "the template is untouched");
  });
});

describe("settle / serialize (one serialization per message, issue 20)", () => {
  it("serialize reuses the text settle kept, and serializes anew a stanza never settled", () => {
    const settled = el("message", { to: "bob@localhost" }, el("body", {}, "hi"));
    const text = settle(settled);
    assert.equal(serialize(settled), text);
    assert.ok(Object.is(serialize(settled), text), "the kept string itself, not a new serialization");
    const fresh = el("message", { to: "bob@localhost" }, el("body", {}, "hi"));
    assert.equal(serialize(fresh), fresh.toString());
    fresh.cnode(el("x"));
    assert.equal(parseElement(serialize(fresh)).getChild("x")?.name, "x", "what was not settled is serialized as it stands");
  });
});
