/** RFC 9110 media types and RFC 6266 Content-Disposition values (src/http/media-type.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseMediaType, formatMediaType, mediaTypesMatch, contentDisposition } from "../../src/http/media-type.js";

const parsed = (s: string) => {
  const m = parseMediaType(s);
  return m && { essence: m.essence, parameters: Object.fromEntries(m.parameters) };
};

describe("parseMediaType", () => {
  it("accepts type/subtype with token and quoted-string parameters, normalising case", () => {
    assert.deepEqual(parsed("image/jpeg"), { essence: "image/jpeg", parameters: {} });
    assert.deepEqual(parsed("Text/HTML; Charset=UTF-8"), { essence: "text/html", parameters: { charset: "UTF-8" } });
    assert.deepEqual(parsed("text/plain;charset=utf-8 ;\tformat=flowed"), { essence: "text/plain", parameters: { charset: "utf-8", format: "flowed" } });
    assert.deepEqual(parsed('multipart/mixed; boundary="a b\\"c"'), { essence: "multipart/mixed", parameters: { boundary: 'a b"c' } });
    assert.deepEqual(parsed("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
      { essence: "application/vnd.openxmlformats-officedocument.wordprocessingml.document", parameters: {} });
    // parameters = *( OWS ";" OWS [ parameter ] ): empty parameters are allowed.
    assert.deepEqual(parsed("text/plain;"), { essence: "text/plain", parameters: {} });
  });

  it("refuses control characters, non-ASCII, missing parts and malformed parameters", () => {
    for (const bad of [
      "text/plain\r\nX-Injected: yes", "text/plain\n", "text/plain\0", "text/pl\u00e4in", "text/plain; charset=\u20ac",
      'text/plain; a="\u00ff"', "text/plain; a=\"\r\n\"", "text", "/plain", "text/", "text/plain/x", "te xt/plain", "text /plain",
      "text/plain; charset", "text/plain; charset=", "text/plain; =utf-8", 'text/plain; a="unterminated', "text/plain; a=b c",
      "text/plain; a=1; A=2", "", "a/" + "b".repeat(300),
    ]) {
      assert.equal(parseMediaType(bad), undefined, JSON.stringify(bad));
    }
  });

  it("formats the canonical form, quoting values that are not tokens", () => {
    assert.equal(formatMediaType(parseMediaType("Text/Plain ;CHARSET=utf-8")!), "text/plain; charset=utf-8");
    const m = parseMediaType('a/b; x="p q"; y="\\\\"')!;
    assert.equal(formatMediaType(m), 'a/b; x="p q"; y="\\\\"');
    assert.deepEqual(parsed(formatMediaType(m)), parsed('a/b; x="p q"; y="\\\\"'));
  });
});

describe("mediaTypesMatch", () => {
  const match = (a: string, b: string) => mediaTypesMatch(parseMediaType(a)!, parseMediaType(b)!);
  it("matches equal essences, case-insensitively, with the charset value compared case-insensitively", () => {
    assert.ok(match("text/plain; charset=utf-8", "text/plain; charset=utf-8"));
    assert.ok(match("text/plain; charset=utf-8", "TEXT/Plain; Charset=\"UTF-8\""));
    assert.ok(match("text/plain; charset=utf-8", "text/plain"), "the bare essence of the slot's type");
    assert.ok(match("text/plain", "text/plain; charset=utf-8"));
  });
  it("refuses another essence or a parameter that disagrees", () => {
    assert.ok(!match("text/plain", "text/html"));
    assert.ok(!match("text/plain; charset=utf-8", "text/plain; charset=iso-8859-1"));
    assert.ok(!match("multipart/mixed; boundary=AB", "multipart/mixed; boundary=ab"), "other values are case-sensitive");
  });
});

describe("contentDisposition", () => {
  it("gives an ASCII fallback and an RFC 8187 filename*, escaping quotes, backslashes and the ext-value delimiter", () => {
    assert.equal(contentDisposition("inline", "holiday photo.jpg"), `inline; filename="holiday photo.jpg"; filename*=UTF-8''holiday%20photo.jpg`);
    assert.equal(contentDisposition("attachment", `it's "x"\\(1)*.txt`),
      `attachment; filename="it's _x__(1)*.txt"; filename*=UTF-8''it%27s%20%22x%22%5C%281%29%2A.txt`);
    assert.equal(contentDisposition("attachment", "résumé 100%.pdf"), `attachment; filename="r_sum_ 100_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%20100%25.pdf`);
  });
});
