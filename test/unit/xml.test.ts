/** shareChildren: fan-out copies serialize exactly like ordinary elements. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { el, cloneElement, shareChildren } from "../../src/xmpp/xml.js";

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
