/** The restricted-XML stream parser against ../shared/reference/HARDENING.md §4.1–§4.4. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { StreamParser, type ParserLimits } from "../../src/xmpp/parser.js";
import type { Element } from "../../src/xmpp/xml.js";
import type { StreamError } from "../../src/errors.js";

const LIMITS: ParserLimits = { maxStanzaBytes: 1000, maxDepth: 8, maxElementsPerStanza: 50, maxAttributes: 8, maxNameLength: 64, maxLangLength: 35 };
const HEADER = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

function run(chunks: Array<string | Uint8Array>, limits: Partial<ParserLimits> = {}) {
  const elements: Element[] = [];
  const errors: StreamError[] = [];
  let started = 0;
  let ended = 0;
  const p = new StreamParser({ ...LIMITS, ...limits }, {
    streamStart: () => { started++; },
    element: (e) => elements.push(e),
    streamEnd: () => { ended++; },
    error: (e) => errors.push(e),
  });
  for (const c of chunks) p.write(typeof c === "string" ? Buffer.from(c) : c);
  return { elements, errors, started, ended, condition: errors[0]?.condition };
}

describe("stream parser: well-formed input", () => {
  it("emits the header, then each top-level element with an explicit namespace", () => {
    const r = run([HEADER, "<message to='a@b'><body>hi &amp; &lt;3</body></message> <presence/>", "</stream:stream>"]);
    assert.equal(r.started, 1);
    assert.equal(r.ended, 1);
    assert.deepEqual(r.elements.map((e) => e.toString()), [
      `<message to="a@b" xmlns="jabber:client"><body>hi &amp; &lt;3</body></message>`,
      `<presence xmlns="jabber:client"/>`,
    ]);
    assert.equal(r.errors.length, 0);
  });

  it("joins a multi-byte character split across reads (fed one byte at a time)", () => {
    const bytes = Buffer.from(`${HEADER}<message><body>é€😀</body></message>`);
    const r = run([...bytes].map((b) => Uint8Array.of(b)));
    assert.equal(r.errors.length, 0);
    assert.equal(r.elements[0]!.getChildText("body"), "é€😀");
  });

  it("decodes CDATA as text and re-serialises it escaped (no smuggling)", () => {
    const r = run([HEADER, "<message><body><![CDATA[</body><evil/>]]></body></message>"]);
    assert.equal(r.elements[0]!.getChildText("body"), "</body><evil/>");
    assert.equal(r.elements[0]!.toString(), `<message xmlns="jabber:client"><body>&lt;/body&gt;&lt;evil/&gt;</body></message>`);
  });

  it("carries a prefix bound on the stream header into the stanza", () => {
    const r = run(["<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xmlns:x='urn:x' to='l' version='1.0'>", "<message><x:y/></message>"]);
    assert.equal(r.elements[0]!.toString(), `<message xmlns="jabber:client"><x:y xmlns:x="urn:x"/></message>`);
  });

  it("accepts an XML declaration at the very start and whitespace keepalives", () => {
    const r = run([`<?xml version='1.0' encoding='UTF-8'?>${HEADER}`, " \n ", "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"]);
    assert.equal(r.errors.length, 0);
    assert.equal(r.elements.length, 1);
  });
});

describe("stream parser: restricted XML (RFC 6120 §11.1) → restricted-xml", () => {
  const cases: Record<string, string> = {
    "DOCTYPE": `<?xml version='1.0'?><!DOCTYPE stream SYSTEM "x.dtd">${HEADER}`,
    "billion laughs": `<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;">]>${HEADER}<message><body>&lol1;</body></message>`,
    "XXE": `<!DOCTYPE x [<!ENTITY x SYSTEM "file:///etc/passwd">]>${HEADER}`,
    "comment": `${HEADER}<!-- comment -->`,
    "comment hiding a stanza": `${HEADER}<message><!-- <message/> --></message>`,
    "processing instruction": `${HEADER}<?xml-stylesheet href='x'?>`,
    "XML 1.1": `<?xml version='1.1'?>${HEADER}`,
    "standalone declaration": `<?xml version='1.0' standalone='no'?>${HEADER}`,
    "misplaced XML declaration": `${HEADER}<?xml version='1.0'?>`,
  };
  for (const [name, input] of Object.entries(cases)) {
    it(name, () => {
      const r = run([input]);
      assert.equal(r.condition, "restricted-xml");
      assert.equal(r.elements.length, 0);
    });
  }
  it("a non-UTF-8 encoding declaration → unsupported-encoding", () => {
    assert.equal(run([`<?xml version='1.0' encoding='ISO-8859-1'?>${HEADER}`]).condition, "unsupported-encoding");
  });
});

describe("stream parser: encoding (RFC 6120 §4.9.3.22)", () => {
  for (const [name, bytes] of Object.entries({ "overlong C0 AF": [0xc0, 0xaf], "surrogate ED A0 80": [0xed, 0xa0, 0x80], "FF": [0xff], "5-byte form": [0xf8, 0x88, 0x80, 0x80, 0x80] })) {
    it(`invalid UTF-8 (${name}) → unsupported-encoding, never U+FFFD`, () => {
      const r = run([HEADER, "<message><body>", Uint8Array.from(bytes), "</body></message>"]);
      assert.equal(r.condition, "unsupported-encoding");
      assert.equal(r.elements.length, 0);
    });
  }
  for (const [name, text] of Object.entries({ "&#0;": "&#0;", "raw U+0001": "\u0001", "&#xD800;": "&#xD800;", "U+FFFE": "\uFFFE" })) {
    it(`non-Char ${name} → not-well-formed`, () => {
      assert.equal(run([HEADER, `<message><body>${text}</body></message>`]).condition, "not-well-formed");
    });
  }
});

describe("stream parser: malformed XML → exact conditions (HARDENING §4.1)", () => {
  const cases: Array<[string, string, string]> = [
    ["<'/>", "<'/>", "not-well-formed"],
    ["mismatched end tag", "<a><b></a>", "not-well-formed"],
    ["duplicate attribute (never last-wins)", "<message to='a@x' to='b@x'/>", "not-well-formed"],
    ["< in an attribute value", "<message to='a<b'/>", "not-well-formed"],
    ["unquoted attribute", "<message to=a/>", "not-well-formed"],
    ["undefined entity &nbsp;", "<message><body>&nbsp;</body></message>", "not-well-formed"],
    ["unbound prefix", "<foo:message/>", "bad-namespace-prefix"],
    ["text at stream level", "hello<presence/>", "invalid-xml"],
  ];
  for (const [name, input, condition] of cases) {
    it(name, () => {
      const r = run([HEADER, input]);
      assert.equal(r.condition, condition);
      assert.equal(r.elements.length, 0);
    });
  }
  it("emits nothing after the first error", () => {
    const r = run([HEADER, "<a><b></a><message/>", "<presence/>"]);
    assert.equal(r.errors.length, 1);
    assert.equal(r.elements.length, 0);
  });
});

describe("stream parser: limits → policy-violation (HARDENING §2.2, §4.4)", () => {
  const stanzaOf = (bodyLen: number) => `<message><body>${"x".repeat(bodyLen)}</body></message>`;
  const overhead = stanzaOf(0).length;
  it("a stanza of exactly the limit passes; one byte more fails, with <stanza-too-big/>", () => {
    assert.equal(run([HEADER, stanzaOf(1000 - overhead)]).errors.length, 0);
    const r = run([HEADER, stanzaOf(1001 - overhead)]);
    assert.equal(r.condition, "policy-violation");
    assert.match(r.errors[0]!.toElement().toString(), /<stanza-too-big xmlns="urn:xmpp:errors"\/>/);
  });
  it("counts bytes, not characters", () => {
    const euros = (1000 - overhead) / 3; // 3 bytes each
    assert.equal(run([HEADER, `<message><body>${"€".repeat(Math.floor(euros))}</body></message>`]).errors.length, 0);
    assert.equal(run([HEADER, `<message><body>${"€".repeat(Math.floor(euros) + 1)}</body></message>`]).condition, "policy-violation");
  });
  it("many stanzas in one read each get their own budget", () => {
    const r = run([HEADER, stanzaOf(900 - overhead).repeat(20)]);
    assert.equal(r.errors.length, 0);
    assert.equal(r.elements.length, 20);
  });
  it("text without '<' is cut off at the limit even when it never ends", () => {
    const r = run([HEADER, "<message><body>", ...Array.from({ length: 50 }, () => "y".repeat(100))]);
    assert.equal(r.condition, "policy-violation");
  });
  it("a huge stream header is cut off too", () => {
    assert.equal(run([`<stream:stream xmlns='jabber:client' a='${"z".repeat(2000)}'`]).condition, "policy-violation");
  });
  it("nesting deeper than the limit", () => {
    assert.equal(run([HEADER, "<a>".repeat(8) + "</a>".repeat(8)]).errors.length, 0);
    assert.equal(run([HEADER, "<a>".repeat(9)]).condition, "policy-violation");
    assert.equal(run([HEADER, "<a>".repeat(10000)], { maxStanzaBytes: 100000 }).condition, "policy-violation");
  });
  it("too many attributes, too many elements, a long name, a long xml:lang", () => {
    const attrs = Array.from({ length: 9 }, (_, i) => `a${i}='1'`).join(" ");
    assert.equal(run([HEADER, `<message ${attrs}/>`]).condition, "policy-violation");
    assert.equal(run([HEADER, `<message>${"<x/>".repeat(50)}</message>`]).condition, "policy-violation");
    assert.equal(run([HEADER, `<${"n".repeat(65)}/>`]).condition, "policy-violation");
    assert.equal(run([HEADER, `<message xml:lang='${"a".repeat(36)}'/>`]).condition, "policy-violation");
    assert.equal(run([HEADER, `<message xml:lang='${"a".repeat(35)}'/>`]).errors.length, 0);
  });
});
