/** RFC 7622 addresses, including the edge cases of HARDENING §4.5. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseJid, JidError, sameJid } from "../../src/xmpp/jid.js";

describe("JID parsing (RFC 7622)", () => {
  it("splits local, domain and resource; a resource may contain '/' and '@'", () => {
    const j = parseJid("alice@example.org/phone/1@x");
    assert.deepEqual([j.local, j.domain, j.resource], ["alice", "example.org", "phone/1@x"]);
    assert.equal(j.bare, "alice@example.org");
    assert.equal(j.full, "alice@example.org/phone/1@x");
    assert.equal(parseJid("example.org").bare, "example.org");
    assert.equal(parseJid("example.org/r").resource, "r");
  });

  it("normalises case, width and Unicode form so equal JIDs compare equal", () => {
    assert.equal(parseJid("ALICE@Example.ORG").bare, "alice@example.org");
    assert.equal(parseJid("ＡＬＩＣＥ@example.org").local, "alice");
    assert.equal(parseJid("e\u0301mile@x.org").bare, parseJid("\u00e9mile@x.org").bare);
    assert.equal(parseJid("example.org.").domain, "example.org");
    assert.equal(parseJid("user@host/Res").resource, "Res"); // resources keep case
  });

  const invalid: Array<[string, string]> = [
    ["@host", "localpart"], ["user@", "domainpart"], ["user@host/", "resourcepart"], ["/res", "domainpart"],
    ["a@b@c", "domainpart"], [`${"a".repeat(1024)}@host`, "localpart"], [`${"ä".repeat(512)}@host`, "localpart"], ["a€@host", "localpart"],
    [`u@${"a".repeat(64)}.org`, "domainpart"], ["a\"b@host", "localpart"], ["a&b@host", "localpart"], ["a'b@host", "localpart"],
    ["a:b@host", "localpart"], ["a<b@host", "localpart"], ["a>b@host", "localpart"], ["a b@host", "localpart"],
    ["a\u0001@host", "localpart"], ["a\u200db@host", "localpart"], ["u@host/a\u0000", "resourcepart"], ["u@ho st", "domainpart"],
    ["u@[::1", "domainpart"],
  ];
  for (const [input, part] of invalid) {
    it(`rejects ${JSON.stringify(input.length > 40 ? input.slice(0, 20) + "…" : input)} in the ${part}`, () => {
      assert.throws(() => parseJid(input), (err: unknown) => err instanceof JidError && err.part === part);
    });
  }

  it("limits are in bytes: 511 × 'ä' (1022 bytes) is a valid localpart, 512 (1024 bytes) is not", () => {
    assert.equal(parseJid(`${"ä".repeat(511)}@host`).local.length, 511);
  });

  it("accepts IP literals", () => {
    assert.equal(parseJid("u@[::1]").domain, "[::1]");
    assert.equal(parseJid("u@127.0.0.1").domain, "127.0.0.1");
  });
});

describe("sameJid", () => {
  it("compares prepared JIDs, not strings", () => {
    assert.equal(sameJid("USER@LOCALHOST", "user@localhost"), true);
    assert.equal(sameJid("user@localhost.", parseJid("user@localhost")), true);
    assert.equal(sameJid("user@localhost/Res", "user@localhost/res"), false);
    assert.equal(sameJid("user@localhost", "user@localhost/res"), false);
    assert.equal(sameJid(undefined, "user@localhost"), false);
    assert.equal(sameJid("not a jid@@", "user@localhost"), false);
  });
});
