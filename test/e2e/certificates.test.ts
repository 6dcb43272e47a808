/**
 * Certificates replaced while the server runs (issue 17): by a tool rewriting the configured files,
 * by certbot swapping the symlinks in live/<name>/, and on SIGHUP. New handshakes on STARTTLS,
 * direct TLS and HTTPS get the new certificate; a connection made before keeps working; a broken
 * replacement leaves the current certificate in place, logged and shown by certificates().
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, renameSync, symlinkSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { parseConfig } from "../../src/config.js";
import { startServer, type Server } from "../../src/server.js";
import { generateSelfSigned } from "../../src/xmpp/tls.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import { capturingLogger, eventually, handshake, type TlsEntry } from "../helpers/tls.js";
import { freeTcpPort } from "../helpers/pebble.js";

const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;
const NAMES = ["conference.localhost", "upload.localhost", "push.localhost"];

/** Writes a file the way careful tools do: a temporary file renamed over the old one. */
function replaceFile(path: string, data: string): void {
  writeFileSync(`${path}.new`, data);
  renameSync(`${path}.new`, path);
}

describe("configured certificate files replaced while running", () => {
  let dir: string;
  let server: Server;
  let lines: Array<Record<string, unknown>>;
  const files = () => ({ cert: join(dir, "tls", "localhost.crt"), key: join(dir, "tls", "localhost.key") });
  const entries: TlsEntry[] = ["starttls", "direct-tls", "https"];
  const port = (entry: TlsEntry) => (entry === "https" ? server.ports.https! : entry === "direct-tls" ? server.ports.c2sDirectTls! : server.ports.c2s!);
  const served = async (entry: TlsEntry) => {
    const o = await handshake(entry, port(entry));
    assert.ok(o.ok, o.ok ? "" : o.error);
    return o.cert.fingerprint256;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "parley-certs-"));
    mkdirSync(join(dir, "tls"));
    const first = await generateSelfSigned("localhost", NAMES);
    writeFileSync(files().cert, first.cert);
    writeFileSync(files().key, first.key);
    const capture = capturingLogger("info");
    lines = capture.lines;
    server = await startServer(parseConfig({
      hosts: ["localhost"], dataDir: join(dir, "data"), storage: { driver: "memory" }, auth: { scramIterations: 4096 },
      listen: { address: "127.0.0.1", s2s: null, c2s: 0, c2sDirectTls: 0, https: 0, http: null },
      tls: { certificates: { localhost: files() } },
      modules: { extdisco: { stun: false } },
    }), { log: capture.log });
  });
  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a tool rewriting the files: new handshakes get the new certificate, an open session stays", async () => {
    const old = fingerprint(readFileSync(files().cert, "utf8"));
    for (const entry of entries) assert.equal(await served(entry), old);
    await server.accounts.create("alice@localhost", "pw");
    const alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
    try {
      const next = await generateSelfSigned("localhost", NAMES);
      replaceFile(files().key, next.key);
      replaceFile(files().cert, next.cert);
      await eventually("the new certificate is served", async () => ((await served("direct-tls")) === fingerprint(next.cert) ? true : undefined));
      for (const entry of entries) assert.equal(await served(entry), fingerprint(next.cert), entry);
      const noSni = await handshake("direct-tls", server.ports.c2sDirectTls!, { servername: "" });
      assert.ok(noSni.ok && noSni.cert.fingerprint256 === fingerprint(next.cert), "the default context too");
      const status = server.certificates()[0]!;
      assert.equal(status.source, "configured");
      assert.equal(status.fingerprint, fingerprint(next.cert));
      assert.equal(status.lastError, undefined);
      // The session opened on the old certificate goes on.
      const socket = (alice.xmpp as unknown as { socket: { socket: TLSSocket } }).socket.socket;
      assert.equal(socket.getPeerCertificate().fingerprint256, old);
      const pong = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
      assert.equal(pong.attrs.type, "result");
    } finally {
      await alice.stop();
    }
  });

  it("a key that does not match the certificate: the current certificate stays, the failure is logged and shown", async () => {
    const current = server.certificates()[0]!.fingerprint;
    const other = await generateSelfSigned("localhost", NAMES);
    replaceFile(files().cert, other.cert); // the key is left as it was: a mismatch
    const error = await eventually("the failed reload is reported", () => server.certificates()[0]!.lastError);
    assert.equal(error.stage, "load");
    assert.ok(lines.some((l) => l.level === 50 && l.msg === "certificate reload failed; the current certificate stays in use"));
    for (const entry of entries) assert.equal(await served(entry), current, entry);
    // Once the key arrives, the pair is taken.
    replaceFile(files().key, other.key);
    await eventually("the pair is taken", () => (server.certificates()[0]!.fingerprint === fingerprint(other.cert) ? true : undefined));
    assert.equal(await served("https"), fingerprint(other.cert));
  });
});

describe("certbot's live/ directory", () => {
  it("symlinks swapped to a new archive version are picked up", async () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-certbot-"));
    const archive = join(dir, "archive", "localhost");
    const live = join(dir, "live", "localhost");
    mkdirSync(archive, { recursive: true });
    mkdirSync(live, { recursive: true });
    const write = async (n: number) => {
      const pem = await generateSelfSigned("localhost", NAMES);
      writeFileSync(join(archive, `fullchain${n}.pem`), pem.cert);
      writeFileSync(join(archive, `privkey${n}.pem`), pem.key);
      return pem;
    };
    // As certbot does: new symlinks made beside the old ones, then renamed over them.
    const link = (n: number) => {
      for (const [name, target] of [["privkey.pem", `privkey${n}.pem`], ["fullchain.pem", `fullchain${n}.pem`]] as const) {
        symlinkSync(join("..", "..", "archive", "localhost", target), join(live, `${name}.tmp`));
        renameSync(join(live, `${name}.tmp`), join(live, name));
      }
    };
    await write(1);
    link(1);
    const server = await startServer(parseConfig({
      hosts: ["localhost"], dataDir: join(dir, "data"), storage: { driver: "memory" },
      listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null },
      tls: { certificates: { localhost: { cert: join(live, "fullchain.pem"), key: join(live, "privkey.pem") } } },
      modules: { extdisco: { stun: false } },
    }), { log: capturingLogger().log });
    try {
      const renewed = await write(2);
      link(2);
      await eventually("the renewed certificate is served", async () => {
        const o = await handshake("direct-tls", server.ports.c2sDirectTls!);
        return o.ok && o.cert.fingerprint256 === fingerprint(renewed.cert) ? true : undefined;
      });
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("SIGHUP", () => {
  it("`parley start` reloads the certificate files on SIGHUP", async () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-sighup-"));
    // The configured paths are symlinks to files elsewhere, rewritten in place: no change shows
    // in the watched directory, so only the signal can make the server look again.
    const elsewhere = join(dir, "elsewhere");
    const tls = join(dir, "tls");
    mkdirSync(elsewhere);
    mkdirSync(tls);
    const first = await generateSelfSigned("localhost", NAMES);
    writeFileSync(join(elsewhere, "cert.pem"), first.cert);
    writeFileSync(join(elsewhere, "key.pem"), first.key);
    symlinkSync(join(elsewhere, "cert.pem"), join(tls, "cert.pem"));
    symlinkSync(join(elsewhere, "key.pem"), join(tls, "key.pem"));
    const port = await freeTcpPort();
    writeFileSync(join(dir, "parley.yaml"), [
      "hosts: [localhost]", `dataDir: ${join(dir, "data")}`, "storage: { driver: memory }", "log: { level: info, pretty: false }",
      `listen: { address: 127.0.0.1, s2s: null, c2s: null, c2sDirectTls: ${port}, https: null, http: null }`,
      `tls: { certificates: { localhost: { cert: ${join(tls, "cert.pem")}, key: ${join(tls, "key.pem")} } } }`,
      "modules: { extdisco: { stun: false } }", "",
    ].join("\n"));
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "start", "--config", join(dir, "parley.yaml")], { stdio: ["ignore", "pipe", "pipe"] });
    const logLines: Array<Record<string, unknown>> = [];
    let buffered = "";
    child.stdout.on("data", (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split("\n");
      buffered = parts.pop()!;
      for (const p of parts) if (p.startsWith("{")) logLines.push(JSON.parse(p) as Record<string, unknown>);
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
    try {
      await eventually(`server started (${stderr})`, () => logLines.find((l) => l.msg === "Parley started"), 90_000);
      const next = await generateSelfSigned("localhost", NAMES);
      writeFileSync(join(elsewhere, "key.pem"), next.key);
      writeFileSync(join(elsewhere, "cert.pem"), next.cert);
      child.kill("SIGHUP");
      await eventually("the new certificate is served", async () => {
        const o = await handshake("direct-tls", port);
        return o.ok && o.cert.fingerprint256 === fingerprint(next.cert) ? true : undefined;
      });
      const signal = logLines.findIndex((l) => l.signal === "SIGHUP");
      const installed = logLines.findIndex((l) => l.msg === "certificate installed");
      assert.ok(signal !== -1 && installed > signal, "installed after the signal");
    } finally {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
