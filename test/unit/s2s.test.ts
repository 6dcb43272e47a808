/** S2S building blocks: SRV ordering (RFC 2782), dialback keys (XEP-0185), RFC 6125 name matching and chains. */
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { orderSrv, parseRoute, resolveServer, type S2SDns, type SrvRecord } from "../../src/xmpp/s2s/resolve.js";
import { dialbackKey, keysEqual } from "../../src/xmpp/s2s/dialback.js";
import { certificateNamesDomain, verifyServerCertificate } from "../../src/xmpp/s2s/pkix.js";
import { domainPolicy } from "../../src/xmpp/s2s/policy.js";
import { reverseStanzaRefusal } from "../../src/xmpp/s2s/bidi.js";
import { parseJid } from "../../src/xmpp/jid.js";

describe("domain policy (s2s.allowedDomains / blockedDomains)", () => {
  it("a listed domain covers its subdomains; blocked wins; an empty allowlist allows the rest", () => {
    const open = domainPolicy([], ["Bad.example"]);
    assert.equal(open("bad.example"), false);
    assert.equal(open("conference.bad.example"), false);
    assert.equal(open("notbad.example"), true, "a suffix that is not a label boundary does not match");
    const closed = domainPolicy(["friend.example"], ["muc.friend.example"]);
    assert.equal(closed("friend.example"), true);
    assert.equal(closed("upload.friend.example"), true);
    assert.equal(closed("muc.friend.example"), false);
    assert.equal(closed("other.example"), false);
  });
});

const srv = (name: string, priority: number, weight: number, port = 5269): SrvRecord => ({ name, port, priority, weight });

describe("XEP-0288: what an outgoing stream takes back (the authenticated pair, reversed)", () => {
  const refusal = (from: string, to: string) => reverseStanzaRefusal("a.test", "b.test", parseJid(from), parseJid(to))?.condition;
  it("from the domain called to the domain authenticated as: accepted, whatever the local parts", () => {
    assert.equal(refusal("bob@b.test/r", "alice@a.test"), undefined);
    assert.equal(refusal("b.test", "a.test"), undefined);
  });
  it("another sender is invalid-from, even a subdomain of the peer or one of our domains", () => {
    assert.equal(refusal("x@evil.test", "alice@a.test"), "invalid-from");
    assert.equal(refusal("room@conference.b.test", "alice@a.test"), "invalid-from");
    assert.equal(refusal("alice@a.test", "alice@a.test"), "invalid-from");
  });
  it("another recipient is host-unknown, even another domain of ours (its pair has a stream of its own)", () => {
    assert.equal(refusal("bob@b.test", "x@conference.a.test"), "host-unknown");
    assert.equal(refusal("bob@b.test", "x@c.test"), "host-unknown");
  });
});

describe("SRV ordering (RFC 2782) and resolution (RFC 6120 §3.2)", () => {
  it("lowest priority first; within a priority, weights choose the order", () => {
    const records = [srv("c", 20, 0), srv("a", 10, 60), srv("b", 10, 40)];
    // A random draw near 0 picks the first running sum ≥ it: "b" (weights sorted ascending: b=40, a=60).
    assert.deepEqual(orderSrv(records, () => 0).map((r) => r.name), ["b", "a", "c"]);
    assert.deepEqual(orderSrv(records, () => 0.99).map((r) => r.name), ["a", "b", "c"]);
  });

  it("over many draws, a weight-60 record comes first about 60% of the time", () => {
    let first = 0;
    for (let i = 0; i < 2000; i++) if (orderSrv([srv("a", 1, 60), srv("b", 1, 40)])[0]!.name === "a") first++;
    assert.ok(first > 1000 && first < 1400, `a first ${first} times of 2000`);
  });

  const dns = (srvs: Record<string, SrvRecord[]>, hosts: Record<string, string[]>): S2SDns => ({
    srv: async (name) => { if (!srvs[name]) throw Object.assign(new Error("ENOTFOUND"), { code: "ENOTFOUND" }); return srvs[name]!; },
    addresses: async (host) => hosts[host] ?? [],
  });

  it("SRV targets in order, each with its addresses; a static route wins; no SRV falls back to the domain on 5269", async () => {
    const d = dns({ "_xmpp-server._tcp.example.net": [srv("x2.example.net.", 20, 0, 5270), srv("x1.example.net.", 10, 0, 5269)] },
      { "x1.example.net": ["192.0.2.1", "2001:db8::1"], "x2.example.net": ["192.0.2.2"], "plain.example": ["192.0.2.9"] });
    assert.deepEqual(await resolveServer("example.net", d, new Map()), { targets: [
      { host: "192.0.2.1", port: 5269, directTls: false }, { host: "2001:db8::1", port: 5269, directTls: false }, { host: "192.0.2.2", port: 5270, directTls: false }] });
    assert.deepEqual(await resolveServer("example.net", d, new Map([["example.net", { host: "127.0.0.1", port: 1 }]])), { targets: [{ host: "127.0.0.1", port: 1 }] });
    assert.deepEqual(await resolveServer("plain.example", d, new Map()), { targets: [{ host: "192.0.2.9", port: 5269, directTls: false }] });
    assert.ok("unavailable" in await resolveServer("nowhere.example", d, new Map()));
  });

  it("XEP-0368: _xmpps-server records join the order; at equal priority direct TLS first", async () => {
    const d = dns({
      "_xmpps-server._tcp.both.example": [srv("tls.both.example", 10, 0, 5270), srv("late.both.example", 30, 0, 443)],
      "_xmpp-server._tcp.both.example": [srv("plain.both.example", 10, 0, 5269), srv("early.both.example", 5, 0, 5269)],
    }, { "tls.both.example": ["192.0.2.10"], "late.both.example": ["192.0.2.11"], "plain.both.example": ["192.0.2.12"], "early.both.example": ["192.0.2.13"] });
    const r = await resolveServer("both.example", d, new Map());
    assert.deepEqual("targets" in r && r.targets.map((t) => `${t.host}:${t.port}:${t.directTls ? "tls" : "starttls"}`),
      ["192.0.2.13:5269:starttls", "192.0.2.10:5270:tls", "192.0.2.12:5269:starttls", "192.0.2.11:443:tls"]);
  });

  it("static routes: host:port is STARTTLS, xmpps://host:port direct TLS", () => {
    assert.deepEqual(parseRoute("127.0.0.1:5269"), { host: "127.0.0.1", port: 5269, directTls: false });
    assert.deepEqual(parseRoute("xmpps://xmpp.example.org:5270"), { host: "xmpp.example.org", port: 5270, directTls: true });
    assert.deepEqual(parseRoute("xmpp://[2001:db8::1]:5269"), { host: "2001:db8::1", port: 5269, directTls: false });
  });

  it("a single SRV record with target '.' means no service: no fallback", async () => {
    const d = dns({ "_xmpp-server._tcp.no.example": [srv(".", 0, 0, 0)] }, { "no.example": ["192.0.2.3"] });
    assert.ok("unavailable" in await resolveServer("no.example", d, new Map()));
  });
});

describe("dialback keys (XEP-0185 §3)", () => {
  it("HMAC-SHA256 keyed with hex SHA-256 of the secret over 'receiving originating id' (the XEP's example)", () => {
    assert.equal(dialbackKey(Buffer.from("s3cr3tf0rd14lb4ck"), "xmpp.example.com", "example.org", "D60000229F"),
      "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643");
  });

  it("keys differ by direction and stream; comparison is exact", () => {
    const secret = Buffer.from("k");
    const key = dialbackKey(secret, "a.example", "b.example", "id1");
    assert.notEqual(key, dialbackKey(secret, "b.example", "a.example", "id1"));
    assert.notEqual(key, dialbackKey(secret, "a.example", "b.example", "id2"));
    assert.ok(keysEqual(` ${key}\n`, key));
    assert.ok(!keysEqual(key.slice(1), key));
  });
});

const openssl = spawnSync("openssl", ["version"]).status === 0;

describe("certificates (RFC 6125 §6.4, PKIX chains)", { skip: openssl ? false : "openssl is not installed" }, () => {
  let dir: string;
  let ca: X509Certificate;
  const issue = (name: string, san: string | undefined, signer = "ca") => {
    execFileSync("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`], { cwd: dir, stdio: "ignore" });
    writeFileSync(join(dir, `${name}.ext`), `${san ? `subjectAltName=${san}\n` : ""}basicConstraints=CA:FALSE\n`);
    execFileSync("openssl", ["x509", "-req", "-in", `${name}.csr`, "-CA", `${signer}.crt`, "-CAkey", `${signer}.key`, "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`], { cwd: dir, stdio: "ignore" });
    return new X509Certificate(readFileSync(join(dir, `${name}.crt`)));
  };
  const selfCa = (name: string) => {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.crt`, "-days", "2", "-subj", `/CN=${name}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"], { cwd: dir, stdio: "ignore" });
    return new X509Certificate(readFileSync(join(dir, `${name}.crt`)));
  };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "parley-pkix-"));
    ca = selfCa("ca");
  });

  it("dNSName and wildcard rules", () => {
    const wild = issue("wild", "DNS:example.com,DNS:*.example.com");
    assert.ok(certificateNamesDomain(wild, "example.com"));
    assert.ok(certificateNamesDomain(wild, "im.example.com"), "*.example.com matches one label");
    assert.ok(certificateNamesDomain(wild, "IM.Example.COM"), "case-insensitive");
    assert.ok(!certificateNamesDomain(wild, "a.b.example.com"), "a wildcard spans one label only (§6.4.3)");
    assert.ok(!certificateNamesDomain(wild, "example.org"));
    const partial = issue("partial", "DNS:im*.example.net");
    assert.ok(!certificateNamesDomain(partial, "im1.example.net"), "no partial-label wildcards");
    const cnOnly = issue("cn.example.org", undefined);
    assert.ok(certificateNamesDomain(cnOnly, "cn.example.org"), "CN-ID when there is no subjectAltName (§6.4.4)");
    const both = issue("cn.example.org2", "DNS:other.example.org");
    assert.ok(!certificateNamesDomain(both, "cn.example.org2"), "the CN is ignored when DNS-IDs are present");
  });

  it("a chain to a trusted CA verifies; an untrusted one, a wrong name and a self-signed leaf do not", () => {
    const leaf = issue("leaf", "DNS:leaf.example");
    assert.deepEqual(verifyServerCertificate([leaf.raw], "leaf.example", [ca]), { ok: true });
    assert.equal(verifyServerCertificate([leaf.raw], "other.example", [ca]).ok, false);
    const other = selfCa("other-ca");
    assert.equal(verifyServerCertificate([leaf.raw], "leaf.example", [other]).ok, false);
    assert.equal(verifyServerCertificate([], "leaf.example", [ca]).ok, false);
    assert.equal(verifyServerCertificate([other.raw], "other-ca", [ca]).ok, false, "self-signed");
    assert.equal(verifyServerCertificate([leaf.raw], "leaf.example", [ca], Date.now() + 5 * 86_400_000).ok, false, "expired");
  });

  it("an intermediate the peer sends links the leaf to the anchor", () => {
    execFileSync("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "inter.key", "-out", "inter.csr", "-subj", "/CN=inter"], { cwd: dir, stdio: "ignore" });
    writeFileSync(join(dir, "inter.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n");
    execFileSync("openssl", ["x509", "-req", "-in", "inter.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "inter.crt", "-days", "2", "-extfile", "inter.ext"], { cwd: dir, stdio: "ignore" });
    const inter = new X509Certificate(readFileSync(join(dir, "inter.crt")));
    const leaf = issue("deep", "DNS:deep.example", "inter");
    assert.deepEqual(verifyServerCertificate([leaf.raw, inter.raw], "deep.example", [ca]), { ok: true });
    assert.equal(verifyServerCertificate([leaf.raw], "deep.example", [ca]).ok, false, "without the intermediate");
    // A leaf (not a CA) cannot stand in as an intermediate.
    const notCa = issue("notca", "DNS:notca.example");
    assert.equal(verifyServerCertificate([leaf.raw, notCa.raw], "deep.example", [ca]).ok, false);
  });
});
