/** XEP-0115 §5 verification strings, checked against the XEP's own worked examples. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { capsVerification } from "../../src/xmpp/caps.js";
import { el } from "../../src/xmpp/xml.js";

const FEATURES = ["http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"];

describe("entity capabilities verification string (XEP-0115 §5)", () => {
  it("§5.2 simple generation example", () => {
    assert.equal(capsVerification([{ category: "client", type: "pc", name: "Exodus 0.9.1" }], FEATURES), "QgayPKawpkPSDYmwT/WM94uAlu0=");
  });

  it("§5.3 complex generation example, with languages and an extended form, in any input order", () => {
    const field = (name: string, ...values: string[]) => el("field", { var: name }, ...values.map((v) => el("value", {}, v)));
    const form = el("x", { xmlns: "jabber:x:data", type: "result" },
      field("FORM_TYPE", "urn:xmpp:dataforms:softwareinfo"),
      field("os_version", "10.5.1"), field("os", "Mac"), field("ip_version", "ipv6", "ipv4"),
      field("software", "Psi"), field("software_version", "0.11"));
    const ver = capsVerification(
      [{ category: "client", type: "pc", lang: "el", name: "Ψ 0.11" }, { category: "client", type: "pc", lang: "en", name: "Psi 0.11" }],
      [...FEATURES].reverse(), [form]);
    assert.equal(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
  });
});
