/**
 * TLS as clients meet it (issue 22 items 1 and 5):
 * - with the shipped config, an upload slot's URLs work with full certificate verification
 *   against the generated certificate, by the URL's host name;
 * - the generated certificate names every service domain (Gajim, Dino and Profanity refused
 *   `*.localhost` for upload.localhost);
 * - Mozilla "intermediate" on STARTTLS, direct TLS and HTTPS: TLS 1.2 CBC-SHA1 suites are refused,
 *   AEAD suites and TLS 1.3 work; suites and floor are configurable;
 * - failed handshakes are logged at info with the reason.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { X509Certificate, randomBytes, createHash } from "node:crypto";
import { request as httpsRequest, Agent as HttpsAgent } from "node:https";
import { spawn, spawnSync } from "node:child_process";
import { parse as parseYaml } from "yaml";
import { parseConfig, ConfigError } from "../../src/config.js";
import { startServer, type Server } from "../../src/server.js";
import { silentLogger } from "../../src/log.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { capturingLogger, eventually, handshake, type TlsEntry } from "../helpers/tls.js";

const UPLOAD = "urn:xmpp:http:upload:0";

/** The shipped example config, with fresh data and every port on 0 (as a test must). */
function shippedConfig(dataDir: string): ReturnType<typeof parseConfig> {
  const raw = parseYaml(readFileSync("config/parley.example.yaml", "utf8")) as Record<string, any>;
  raw.dataDir = dataDir;
  for (const key of ["c2s", "c2sDirectTls", "https", "http"]) raw.listen[key] = 0;
  if (raw.modules?.extdisco?.stun) raw.modules.extdisco.stun.port = 0;
  return parseConfig(raw, "config/parley.example.yaml");
}

/** An HTTPS request that verifies the server against `ca` only, by the URL's host name. */
function verifiedRequest(url: string, ca: string, method: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer }> {
  const agent = new HttpsAgent({ ca, rejectUnauthorized: true, keepAlive: false });
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method, agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("TLS with the shipped configuration", () => {
  let server: Server;
  let dataDir: string;
  let alice: Connected;
  let ca: string;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "parley-tls-"));
    server = await startServer(shippedConfig(dataDir), { log: silentLogger() });
    await server.accounts.create("alice@localhost", "pw");
    alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
    ca = readFileSync(join(dataDir, "certs", "localhost.crt"), "utf8");
  });
  after(async () => {
    await alice?.stop();
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("hands out an upload slot whose PUT and GET pass full certificate verification by the URL's host name", async () => {
    const bytes = randomBytes(70_000);
    const reply = await alice.iq(xml("iq", { type: "get", to: "upload.localhost" },
      xml("request", { xmlns: UPLOAD, filename: "photo.jpg", size: String(bytes.length), "content-type": "image/jpeg" })));
    const slot = reply.getChild("slot", UPLOAD)!;
    const putUrl = new URL(slot.getChild("put")!.attrs.url as string);
    const getUrl = new URL(slot.getChild("get")!.attrs.url as string);
    // ejabberd's default: the host itself, which resolves on the machine that ran the server.
    assert.equal(putUrl.hostname, "localhost");
    assert.equal(getUrl.hostname, "localhost");
    assert.equal(Number(getUrl.port), server.ports.https);
    const put = await verifiedRequest(putUrl.href, ca, "PUT", bytes, { "content-type": "image/jpeg", "content-length": String(bytes.length) });
    assert.equal(put.status, 201);
    const got = await verifiedRequest(getUrl.href, ca, "GET");
    assert.equal(got.status, 200);
    assert.equal(createHash("sha256").update(got.body).digest("hex"), createHash("sha256").update(bytes).digest("hex"));
  });

  it("names the host and each service domain explicitly, and each verifies by name", async () => {
    const cert = new X509Certificate(ca);
    const names = cert.subjectAltName!.split(", ");
    for (const name of ["localhost", "upload.localhost", "conference.localhost", "push.localhost"]) {
      assert.ok(names.includes(`DNS:${name}`), `${name} in ${cert.subjectAltName}`);
      for (const entry of ["https", "direct-tls"] as const) {
        const port = entry === "https" ? server.ports.https! : server.ports.c2sDirectTls!;
        const outcome = await handshake(entry, port, { servername: name, ca, rejectUnauthorized: true });
        assert.ok(outcome.ok, `${entry} ${name}: ${outcome.ok ? "" : outcome.error}`);
      }
    }
    assert.ok(!names.some((n) => n.includes("*")), "no wildcard");
  });
});

describe("TLS policy (Mozilla intermediate, RFC 9325) on every TLS entry point", () => {
  let server: TestServer;
  const port = (entry: TlsEntry) => (entry === "https" ? server.ports.https! : entry === "direct-tls" ? server.ports.c2sDirectTls! : server.ports.c2s!);
  const entries: TlsEntry[] = ["starttls", "direct-tls", "https"];
  before(async () => { server = await startTestServer(); });
  after(async () => { await server.cleanup(); });

  for (const entry of entries) {
    it(`${entry}: a TLS 1.2 client offering only CBC-SHA1 suites is refused`, async () => {
      for (const ciphers of ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"]) {
        const outcome = await handshake(entry, port(entry), { maxVersion: "TLSv1.2", ciphers });
        assert.equal(outcome.ok, false, `${ciphers} accepted`);
      }
    });
    it(`${entry}: TLS 1.2 with an ECDHE AEAD suite, and TLS 1.3, are accepted`, async () => {
      for (const ciphers of ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]) {
        const outcome = await handshake(entry, port(entry), { maxVersion: "TLSv1.2", ciphers });
        assert.ok(outcome.ok, `${ciphers}: ${outcome.ok ? "" : outcome.error}`);
        assert.equal(outcome.protocol, "TLSv1.2");
        assert.equal(outcome.cipher, ciphers);
      }
      const tls13 = await handshake(entry, port(entry), { minVersion: "TLSv1.3" });
      assert.ok(tls13.ok && tls13.protocol === "TLSv1.3");
      const tls11 = await handshake(entry, port(entry), { minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" });
      assert.equal(tls11.ok, false);
    });
  }
});

describe("TLS policy is configurable", () => {
  it("tls.ciphers and tls.minVersion apply to STARTTLS, direct TLS and HTTPS", async () => {
    const withCbc = await startTestServer({ tls: { ciphers: "ECDHE-ECDSA-AES128-SHA:TLS_AES_128_GCM_SHA256" } });
    const tls13only = await startTestServer({ tls: { minVersion: "TLSv1.3" } });
    try {
      for (const [entry, a, b] of [
        ["starttls", withCbc.ports.c2s!, tls13only.ports.c2s!],
        ["direct-tls", withCbc.ports.c2sDirectTls!, tls13only.ports.c2sDirectTls!],
        ["https", withCbc.ports.https!, tls13only.ports.https!],
      ] as const) {
        const cbc = await handshake(entry, a, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-SHA" });
        assert.ok(cbc.ok && cbc.cipher === "ECDHE-ECDSA-AES128-SHA", `${entry}: the configured suite is used`);
        const gcm = await handshake(entry, a, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" });
        assert.equal(gcm.ok, false, `${entry}: only the configured suites are offered`);
        const tls12 = await handshake(entry, b, { maxVersion: "TLSv1.2" });
        assert.equal(tls12.ok, false, `${entry}: TLS 1.2 refused under minVersion TLSv1.3`);
        const tls13 = await handshake(entry, b, {});
        assert.ok(tls13.ok && tls13.protocol === "TLSv1.3");
      }
    } finally {
      await withCbc.cleanup();
      await tls13only.cleanup();
    }
  });

  it("a cipher list OpenSSL cannot use is a configuration error naming the key", () => {
    assert.throws(() => parseConfig({ tls: { ciphers: "NOT-A-CIPHER" } }), (err: unknown) =>
      err instanceof ConfigError && err.problems.some((p) => p.startsWith("tls.ciphers: ")));
  });
});

/** Runs a command without blocking the event loop (the server under test runs in this process). */
function run(command: string, args: string[]): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => { output += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { output += d.toString(); });
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, output }));
  });
}

describe("failed TLS handshakes are logged at info with the reason", () => {
  const openssl = spawnSync("openssl", ["version"]).status === 0;
  it("on HTTPS and direct TLS: a client refusing the certificate, and one with no suite in common", { skip: openssl ? false : "openssl (the command-line client) is not installed" }, async () => {
    const { log, lines } = capturingLogger("info");
    const dataDir = mkdtempSync(join(tmpdir(), "parley-tls-log-"));
    const server = await startServer(parseConfig({
      hosts: ["localhost"], dataDir, listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: 0, http: null },
      storage: { driver: "memory" },
    }), { log });
    try {
      for (const [entry, port] of [["https", server.ports.https!], ["direct-tls", server.ports.c2sDirectTls!]] as const) {
        // OpenSSL's client verifies during the handshake and aborts with an alert, as Gajim did.
        const refused = await run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "upload.localhost",
          "-verify_return_error", "-tls1_2", "-alpn", entry === "https" ? "http/1.1" : "xmpp-client"]);
        assert.notEqual(refused.status, 0, "openssl s_client refuses the self-signed certificate");
        const noSuite = await handshake(entry, port, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-SHA" });
        assert.equal(noSuite.ok, false);
        const listener = entry === "https" ? "https" : "c2s-direct-tls";
        const logged = await eventually(`${entry} failures logged`, () => {
          const mine = lines.filter((l) => l.msg === "TLS handshake failed" && l.listener === listener);
          return mine.length >= 2 ? mine : undefined;
        }, 5000);
        for (const line of logged) assert.equal(line.level, 30, "info");
        assert.ok(logged.some((l) => /alert unknown ca/i.test(String(l.reason))), JSON.stringify(logged));
        assert.ok(logged.some((l) => /no shared cipher/i.test(String(l.reason))), JSON.stringify(logged));
        assert.ok(logged.every((l) => l.remote === "127.0.0.1"));
      }
    } finally {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
