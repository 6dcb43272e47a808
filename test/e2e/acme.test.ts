/**
 * Automatic certificates against a real ACME server (Pebble on loopback, real validation):
 * - HTTP-01 on the plain HTTP listener; TLS-ALPN-01 (RFC 8737) on HTTPS and on direct TLS;
 * - one certificate per host covering its service domains, verified by name against Pebble's root;
 * - a failed order keeps the current certificate, is logged and shown by certificates(); the
 *   retry (the SIGHUP path) succeeds once DNS points at the server, and a connection opened before
 *   keeps working while new handshakes get the new certificate;
 * - renewal 30 days before expiry, and not before.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { parseConfig } from "../../src/config.js";
import { startServer, type Server } from "../../src/server.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import { capturingLogger, eventually, handshake } from "../helpers/tls.js";
import { freeTcpPort, pebbleMissing, startPebble, type Pebble } from "../helpers/pebble.js";

const missing = pebbleMissing();
const ORDER_DEADLINE_MS = 90_000;

async function acmeServer(dataDir: string, hosts: string[], pebble: Pebble, listen: Record<string, unknown>, challenges: string[]) {
  const capture = capturingLogger("info");
  const server = await startServer(parseConfig({
    hosts, dataDir, storage: { driver: "memory" }, auth: { scramIterations: 4096 },
    listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: 0, http: null, ...listen },
    tls: { acme: { enabled: true, directoryUrl: pebble.directoryUrl, caFile: pebble.caFile, challenges, email: "ops@example.org" } },
    modules: { extdisco: { stun: false } },
  }), { log: capture.log });
  return { server, lines: capture.lines };
}

const statusOf = (server: Server, host: string) => server.certificates().find((c) => c.host === host)!;

/** A handshake by `name` that verifies against Pebble's root only. */
async function verifiedBy(root: string, entry: "https" | "direct-tls", port: number, name: string) {
  const outcome = await handshake(entry, port, { servername: name, ca: root, rejectUnauthorized: true });
  assert.ok(outcome.ok, `${entry} ${name}: ${outcome.ok ? "" : outcome.error}`);
  return outcome;
}

describe("ACME (RFC 8555) against Pebble", { skip: missing ?? false }, () => {
  let dataDir: string;
  before(() => { dataDir = mkdtempSync(join(tmpdir(), "parley-acme-")); });
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  it("HTTP-01: a failed order keeps the old certificate and is reported; the retry succeeds and live connections stay", async () => {
    const httpPort = await freeTcpPort();
    // DNS points elsewhere at first, as for a server whose records are not set up yet.
    const pebble = await startPebble({ httpPort, tlsPort: 1, ip: "127.0.0.2" });
    const dir = join(dataDir, "http01");
    const { server, lines } = await acmeServer(dir, ["chat.test"], pebble, { http: httpPort, httpAddress: "127.0.0.1" }, ["http-01"]);
    try {
      const before = statusOf(server, "chat.test");
      assert.equal(before.source, "self-signed");
      const failed = await eventually("the first order fails", () => statusOf(server, "chat.test").lastError, ORDER_DEADLINE_MS, 200);
      assert.equal(failed.stage, "acme");
      assert.ok(failed.message.length > 0);
      const after = statusOf(server, "chat.test");
      assert.equal(after.source, "self-signed");
      assert.equal(after.fingerprint, before.fingerprint, "the old certificate stays");
      assert.ok(after.acme?.lastAttemptAt);
      assert.equal(after.acme?.renewAt, undefined, "nothing to renew yet");
      assert.ok(Date.parse(after.acme!.nextRetryAt!) > Date.now() + 30 * 60_000, "tried again in an hour");
      const logged = lines.find((l) => l.msg === "certificate order failed; the current certificate stays in use");
      assert.ok(logged && logged.level === 50 && logged.stage === "acme" && logged.host === "chat.test");
      const stillServed = await handshake("direct-tls", server.ports.c2sDirectTls!, { servername: "chat.test" });
      assert.ok(stillServed.ok && stillServed.cert.fingerprint256 === before.fingerprint);

      // A client connected on the old certificate.
      await server.accounts.create("alice@chat.test", "pw");
      const alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, domain: "chat.test", username: "alice", password: "pw" });
      try {
        const aliceSocket = (alice.xmpp as unknown as { socket: { socket: TLSSocket } }).socket.socket;
        assert.equal(aliceSocket.getPeerCertificate().fingerprint256, before.fingerprint);

        await pebble.resolveTo("127.0.0.1");
        await server.reloadCertificates(); // what SIGHUP does: due and failed orders run now
        const issued = statusOf(server, "chat.test");
        assert.equal(issued.source, "acme", JSON.stringify(issued));
        assert.equal(issued.lastError, undefined);
        assert.deepEqual(issued.missing, []);
        // The host and the service domains it serves (push.chat.test only with an app server configured).
        assert.deepEqual([...issued.names].sort(), ["chat.test", "conference.chat.test", "upload.chat.test"]);
        assert.ok(issued.acme?.renewAt && Date.parse(issued.acme.renewAt) === Date.parse(issued.notAfter) - 30 * 86_400_000);

        const root = await pebble.root();
        for (const name of ["chat.test", "upload.chat.test", "conference.chat.test"]) {
          const fresh = await verifiedBy(root, "direct-tls", server.ports.c2sDirectTls!, name);
          assert.equal(fresh.cert.fingerprint256, issued.fingerprint);
          await verifiedBy(root, "https", server.ports.https!, name);
        }
        // Clients without SNI get the new default certificate too.
        const noSni = await handshake("https", server.ports.https!, { servername: "" });
        assert.ok(noSni.ok && noSni.cert.fingerprint256 === issued.fingerprint);

        // The connection made before the change is untouched and still works.
        const pong = await alice.iq(xml("iq", { type: "get", to: "chat.test" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
        assert.equal(pong.attrs.type, "result");
        assert.equal(aliceSocket.getPeerCertificate().fingerprint256, before.fingerprint);

        // What was written is what is served, for the next start.
        const onDisk = new X509Certificate(readFileSync(join(dir, "acme", "chat.test.crt")));
        assert.equal(onDisk.fingerprint256, issued.fingerprint);
      } finally {
        await alice.stop();
      }
    } finally {
      await server.stop();
      await pebble.stop();
    }
  });

  for (const entry of ["https", "direct-tls"] as const) {
    it(`TLS-ALPN-01 (RFC 8737) answered on the ${entry} listener`, async () => {
      const tlsPort = await freeTcpPort();
      const pebble = await startPebble({ httpPort: 1, tlsPort });
      const listen = entry === "https" ? { https: tlsPort, c2sDirectTls: 0 } : { https: null, c2sDirectTls: tlsPort };
      const { server } = await acmeServer(join(dataDir, `alpn-${entry}`), ["alpn.test"], pebble, listen, ["tls-alpn-01"]);
      try {
        const issued = await eventually("certificate issued", () => {
          const s = statusOf(server, "alpn.test");
          if (s.lastError) throw new Error(`order failed: ${s.lastError.message}`);
          return s.source === "acme" ? s : undefined;
        }, ORDER_DEADLINE_MS, 200);
        const root = await pebble.root();
        for (const name of ["alpn.test", "upload.alpn.test"]) {
          const fresh = await verifiedBy(root, entry, tlsPort, name);
          assert.equal(fresh.cert.fingerprint256, issued.fingerprint);
          assert.equal(fresh.alpn, entry === "https" ? "http/1.1" : "xmpp-client", "ordinary clients get the listener's protocol");
        }
        // Outside a validation, acme-tls/1 is not offered (no application protocol in common).
        const probe = await handshake(entry, tlsPort, { servername: "alpn.test", ALPNProtocols: ["acme-tls/1"] });
        assert.equal(probe.ok, false);
      } finally {
        await server.stop();
        await pebble.stop();
      }
    });
  }

  it("renews a certificate 30 days before it expires, and leaves one that is not due", async () => {
    const httpPort = await freeTcpPort();
    const pebble = await startPebble({ httpPort, tlsPort: 1 });
    const dir = join(dataDir, "renew");
    const seeded: Record<string, string> = {};
    for (const [host, days] of [["later.test", 60], ["soon.test", 10]] as const) {
      const pem = await seededCertificate(host, days);
      mkdirSync(join(dir, "acme"), { recursive: true });
      writeFileSync(join(dir, "acme", `${host}.crt`), pem.cert);
      writeFileSync(join(dir, "acme", `${host}.key`), pem.key, { mode: 0o600 });
      seeded[host] = new X509Certificate(pem.cert).fingerprint256;
    }
    const { server } = await acmeServer(dir, ["later.test", "soon.test"], pebble, { http: httpPort, httpAddress: "127.0.0.1" }, ["http-01"]);
    try {
      assert.equal(statusOf(server, "soon.test").source, "acme");
      const renewed = await eventually("soon.test renewed", () => {
        const s = statusOf(server, "soon.test");
        if (s.lastError) throw new Error(`order failed: ${s.lastError.message}`);
        return s.fingerprint !== seeded["soon.test"] ? s : undefined;
      }, ORDER_DEADLINE_MS, 200);
      assert.match(renewed.issuer, /Pebble/);
      assert.ok(Date.parse(renewed.notAfter) > Date.now() + 60 * 86_400_000);
      const later = statusOf(server, "later.test");
      assert.equal(later.fingerprint, seeded["later.test"], "not due: kept");
      assert.equal(later.acme?.lastAttemptAt, undefined, "no order was placed");
      assert.equal(Date.parse(later.acme!.renewAt!), Date.parse(later.notAfter) - 30 * 86_400_000);
      const served = await handshake("direct-tls", server.ports.c2sDirectTls!, { servername: "soon.test", ca: await pebble.root(), rejectUnauthorized: true });
      assert.ok(served.ok && served.cert.fingerprint256 === renewed.fingerprint);
    } finally {
      await server.stop();
      await pebble.stop();
    }
  });
});

/** A certificate as an earlier ACME order would have left it, expiring in `days`. */
async function seededCertificate(host: string, days: number): Promise<{ cert: string; key: string }> {
  const x509 = await import("@peculiar/x509");
  const { webcrypto } = await import("node:crypto");
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]) as unknown as CryptoKeyPair;
  const names = [host, `conference.${host}`, `upload.${host}`, `push.${host}`].map((value) => ({ type: "dns" as const, value }));
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01", name: `CN=${host}`, notBefore: new Date(Date.now() - (90 - days) * 86_400_000),
    notAfter: new Date(Date.now() + days * 86_400_000), signingAlgorithm: alg, keys,
    extensions: [new x509.SubjectAlternativeNameExtension(names)],
  });
  const { pkcs8Pem } = await import("../../src/xmpp/tls.js");
  return { cert: cert.toString("pem") + "\n", key: pkcs8Pem(Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey))) };
}
