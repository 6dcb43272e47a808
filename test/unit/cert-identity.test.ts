/**
 * RFC 6125 §6 server identity, with certificates openssl makes here: DNS-IDs and wildcards,
 * SRV-IDs (RFC 4985) and XmppAddr (RFC 6120 §13.7.1.4) read from otherName, and the CN-ID rule.
 */
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { dnsNameMatches, identifiersName, presentedIdentifiers, type PresentedIdentifiers } from "../../src/xmpp/s2s/cert-identity.js";
import { certificateNamesDomain, verifyServerCertificate } from "../../src/xmpp/s2s/pkix.js";

const openssl = spawnSync("openssl", ["version"]).status === 0;
if (!openssl) console.log("# SKIPPED unit/cert-identity certificate cases: the openssl command is not installed");

const XMPP_ADDR = "1.3.6.1.5.5.7.8.5";
const SRV_NAME = "1.3.6.1.5.5.7.8.7";
const xmppAddr = (jid: string) => `otherName:${XMPP_ADDR};UTF8:${jid}`;
const srvName = (name: string) => `otherName:${SRV_NAME};IA5STRING:${name}`;

describe("DNS-ID matching rules (RFC 6125 §6.4.1, §6.4.3)", () => {
  it("exact names ignoring case and a trailing dot; one wildcard label, whole and left-most", () => {
    assert.ok(dnsNameMatches("example.com", "EXAMPLE.com."));
    assert.ok(dnsNameMatches("*.example.com", "im.example.com"));
    assert.ok(!dnsNameMatches("*.example.com", "example.com"), "the wildcard stands for one label, not none");
    assert.ok(!dnsNameMatches("*.example.com", "a.b.example.com"), "nor for two");
    assert.ok(!dnsNameMatches("im*.example.com", "im1.example.com"), "no partial-label wildcards");
    assert.ok(!dnsNameMatches("im.*.example.com", "im.x.example.com"), "only the left-most label");
    assert.ok(!dnsNameMatches("*.com", "example.com"), "no wildcard over a single remaining label");
    assert.ok(dnsNameMatches("xn--bcher-kva.example", "bücher.example"), "a U-label reference matches its A-label DNS-ID");
  });

  it("the CN-ID is consulted only when no DNS-ID, SRV-ID, XmppAddr or URI-ID is present (§6.4.4)", () => {
    const none: PresentedIdentifiers = { dnsNames: [], srvNames: [], xmppAddrs: [], hasUri: false, commonNames: ["example.com"] };
    assert.ok(identifiersName(none, "example.com"));
    assert.ok(!identifiersName({ ...none, srvNames: ["_xmpp-client.example.com"] }, "example.com"));
    assert.ok(!identifiersName({ ...none, xmppAddrs: ["other.example"] }, "example.com"));
    assert.ok(!identifiersName({ ...none, hasUri: true }, "example.com"));
  });
});

describe("presented identifiers read from certificates", { skip: openssl ? false : "openssl is not installed" }, () => {
  let dir: string;
  let ca: X509Certificate;
  let serial = 0;
  /** A leaf signed by the test CA with subject CN `cn` and the subjectAltName entries given (openssl syntax). */
  const issue = (cn: string, san: readonly string[]) => {
    const name = `leaf${++serial}`;
    execFileSync("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`], { cwd: dir, stdio: "ignore" });
    writeFileSync(join(dir, `${name}.ext`), `${san.length ? `subjectAltName=${san.join(",")}\n` : ""}basicConstraints=CA:FALSE\n`);
    execFileSync("openssl", ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`], { cwd: dir, stdio: "ignore" });
    return new X509Certificate(readFileSync(join(dir, `${name}.crt`)));
  };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "parley-cert-identity-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=identity test CA",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"], { cwd: dir, stdio: "ignore" });
    ca = new X509Certificate(readFileSync(join(dir, "ca.crt")));
  });

  it("every identifier type is decoded, each in its own list", () => {
    const cert = issue("cn.example", ["DNS:dns.example", srvName("_xmpp-server.srv.example"), xmppAddr("addr.example"), "URI:xmpp:uri.example", "email:x@mail.example"]);
    assert.deepEqual(presentedIdentifiers(cert.raw), {
      dnsNames: ["dns.example"], srvNames: ["_xmpp-server.srv.example"], xmppAddrs: ["addr.example"], hasUri: true, commonNames: ["cn.example"],
    });
  });

  it("SRV-ID: _xmpp-server and _xmpps-server name the domain; another service or domain does not (RFC 4985)", () => {
    const plain = issue("unrelated.example", [srvName("_xmpp-server.example.net")]);
    assert.ok(certificateNamesDomain(plain, "example.net"));
    assert.ok(certificateNamesDomain(plain, "Example.NET"));
    assert.ok(!certificateNamesDomain(plain, "im.example.net"));
    assert.ok(certificateNamesDomain(issue("unrelated.example", [srvName("_xmpps-server.example.net")]), "example.net"), "XEP-0368 direct TLS service");
    const client = issue("example.net", [srvName("_xmpp-client.example.net")]);
    assert.ok(!certificateNamesDomain(client, "example.net"), "a client SRV-ID does not name a server, and rules out the CN");
    const wrongType = issue("unrelated.example", [`otherName:${SRV_NAME};UTF8:_xmpp-server.example.net`]);
    assert.deepEqual(presentedIdentifiers(wrongType.raw)?.srvNames, [], "an SRVName must be an IA5String");
  });

  it("XmppAddr: a domain JID names the server; a JID with a localpart or resource does not (RFC 6120 §13.7.1.4)", () => {
    assert.ok(certificateNamesDomain(issue("unrelated.example", [xmppAddr("example.org")]), "example.org"));
    assert.ok(!certificateNamesDomain(issue("example.org", [xmppAddr("admin@example.org")]), "example.org"), "a user's JID; the CN is not consulted");
    assert.ok(!certificateNamesDomain(issue("unrelated.example", [xmppAddr("example.org/server")]), "example.org"));
    assert.ok(certificateNamesDomain(issue("unrelated.example", [xmppAddr("xn--bcher-kva.example")]), "bücher.example"), "JIDs compare prepared (IDNA)");
    const wrongType = issue("unrelated.example", [`otherName:${XMPP_ADDR};IA5STRING:example.org`]);
    assert.ok(!certificateNamesDomain(wrongType, "example.org"), "an XmppAddr must be a UTF8String");
  });

  it("DNS-IDs and the CN-ID (RFC 6125 §6.4.3, §6.4.4)", () => {
    const wild = issue("unrelated.example", ["DNS:example.com", "DNS:*.example.com"]);
    assert.ok(certificateNamesDomain(wild, "im.example.com"));
    assert.ok(!certificateNamesDomain(wild, "a.b.example.com"));
    assert.ok(certificateNamesDomain(issue("cn-only.example", []), "cn-only.example"), "no subjectAltName: the CN counts");
    assert.ok(!certificateNamesDomain(issue("cn.example", ["URI:xmpp:cn.example"]), "cn.example"), "a URI-ID rules out the CN");
    assert.ok(certificateNamesDomain(issue("cn.example", ["email:admin@cn.example"]), "cn.example"), "an e-mail address is no server identifier: the CN counts");
  });

  it("a certificate that names the domain only by XmppAddr or SRV-ID verifies against its CA", () => {
    assert.deepEqual(verifyServerCertificate([issue("x", [xmppAddr("peer.example")]).raw], "peer.example", [ca]), { ok: true });
    assert.deepEqual(verifyServerCertificate([issue("x", [srvName("_xmpp-server.peer.example")]).raw], "peer.example", [ca]), { ok: true });
    assert.equal(verifyServerCertificate([issue("peer.example", [srvName("_xmpp-client.peer.example")]).raw], "peer.example", [ca]).ok, false);
  });

  it("a structure that runs past its end is not read (and so names nothing)", () => {
    const raw = issue("trunc.example", ["DNS:trunc.example"]).raw;
    assert.equal(presentedIdentifiers(raw.subarray(0, raw.length - 10)), undefined);
    const lying = Buffer.from(raw);
    lying[1] = 0x84; // a four-octet length where a two-octet one was: the whole runs past the buffer
    assert.equal(presentedIdentifiers(lying), undefined);
    assert.equal(presentedIdentifiers(Buffer.from([0x30, 0x80, 0x00, 0x00])), undefined, "indefinite length is not DER");
  });
});
