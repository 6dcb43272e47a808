/** Operations: graceful shutdown, dead-client detection, virtual hosts by SNI, config errors, CLI exit codes. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { startTestServer } from "../helpers/server.js";
import { xml, type Element } from "@xmpp/xml";
import { openStream, rawSession, streamError, tree } from "../helpers/raw.js";
import { ConfigError, parseConfig } from "../../src/config.js";
import { resolveModules } from "../../src/module-host.js";
import { defaultModules } from "../../src/modules/index.js";
import { AuthThrottle } from "../../src/xmpp/c2s/throttle.js";

/** The server's keepalive ping to alice@localhost/raw. */
const isPing = (e: Element) => e.is("iq") && e.attrs.type === "get" && e.attrs.from === "localhost" && e.attrs.to === "alice@localhost/raw";

describe("lifecycle and operations", () => {
  it("stopping the server sends <system-shutdown/> to connected clients", async () => {
    const server = await startTestServer();
    await server.accounts.create("alice@localhost", "pw");
    const c = await rawSession(server.ports.c2sDirectTls!, "alice", "pw");
    await server.cleanup();
    const error = await c.waitForElement(streamError("system-shutdown"));
    assert.deepEqual(tree(error).children, [tree(xml("system-shutdown", { xmlns: "urn:ietf:params:xml:ns:xmpp-streams" }))]);
    // Bytes here: </stream:stream> is no element, the parser only ends the root on it. The stream
    // is closed right after the error, with nothing between them.
    await c.waitFor(/<\/stream:stream>$/);
    assert.equal(c.elements.at(-1), error, "the error is the last thing before the close");
  });

  it("a client that stops answering is pinged and then closed with connection-timeout", async () => {
    const server = await startTestServer({ limits: { idleSeconds: 1, pingTimeoutSeconds: 1 } });
    await server.accounts.create("alice@localhost", "pw");
    const c = await rawSession(server.ports.c2sDirectTls!, "alice", "pw");
    const ping = await c.waitForElement(isPing, 5000);
    assert.ok(ping.attrs.id, "the ping has an id");
    assert.deepEqual(tree(ping).children, [tree(xml("ping", { xmlns: "urn:xmpp:ping" }))]);
    await c.waitForElement(streamError("connection-timeout"), 5000);
    await c.closed;
    await server.cleanup();
  });

  it("a client that answers the ping stays connected", async () => {
    const server = await startTestServer({ limits: { idleSeconds: 1, pingTimeoutSeconds: 1 } });
    await server.accounts.create("alice@localhost", "pw");
    const c = await rawSession(server.ports.c2sDirectTls!, "alice", "pw");
    const ping = await c.waitForElement(isPing, 5000);
    c.send(`<iq type='result' id='${ping.attrs.id}' to='localhost'/>`);
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(server.sessions.get("alice@localhost/raw"));
    c.close();
    await server.cleanup();
  });

  it("serves several virtual hosts, each with its own certificate chosen by SNI", async () => {
    const server = await startTestServer({ hosts: ["localhost", "other.test"] });
    const cn = (servername: string) => new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ port: server.ports.c2sDirectTls!, host: "127.0.0.1", servername, rejectUnauthorized: false }, () => {
        resolve(String(s.getPeerCertificate().subject.CN));
        s.destroy();
      });
      s.once("error", reject);
    });
    assert.equal(await cn("localhost"), "localhost");
    assert.equal(await cn("other.test"), "other.test");
    await server.accounts.create("zoe@other.test", "pw");
    assert.deepEqual(await server.storage.accounts.list("other.test"), ["zoe@other.test"]);
    await server.cleanup();
  });

  it("configuration errors name the key and the reason", () => {
    const problems = (raw: unknown) => {
      try { parseConfig(raw); resolveModules(defaultModules, parseConfig(raw).modules); return []; } catch (e) { return (e as ConfigError).problems; }
    };
    assert.deepEqual(problems({ hosts: [] }).map((p) => p.split(":")[0]), ["hosts"]);
    assert.match(problems({ listen: { c2s: 70000 } })[0]!, /^listen\.c2s: /);
    assert.match(problems({ lisen: {} })[0]!, /Unrecognized key/);
    assert.match(problems({ storage: { driver: "oracle" } })[0]!, /^storage\.driver: /);
    assert.match(problems({ auth: { scramIterations: 100 } })[0]!, /^auth\.scramIterations: /);
    assert.match(problems({ modules: { offline: { maxPerUser: "many" } } })[0]!, /^modules\.offline\.maxPerUser: /);
    assert.match(problems({ modules: { register: { allowFrom: ["not-an-ip"] } } })[0]!, /^modules\.register\.allowFrom\.0: not an IP/);
    assert.match(problems({ modules: { nosuch: {} } })[0]!, /^modules\.nosuch: no such module/);
    assert.match(problems({ modules: { roster: false } })[0]!, /modules\.presence: needs module 'roster'/);
  });

  it("the CLI: check-config exit codes, user add/list/passwd/del", () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-cli-"));
    const cfg = join(dir, "parley.yaml");
    writeFileSync(cfg, `hosts: [localhost]\ndataDir: ${dir}\nauth: { scramIterations: 4096 }\n`);
    const cli = (args: string[], input?: string) => spawnSync("bin/parley", [...args, "--config", cfg], { input, encoding: "utf8" });
    assert.equal(cli(["check-config"]).status, 0);
    assert.equal(cli(["user", "add", "carol@localhost"], "pw1\n").status, 0);
    const dup = cli(["user", "add", "carol@localhost"], "pw1\n");
    assert.equal(dup.status, 4);
    assert.match(dup.stderr, /already exists/);
    assert.equal(cli(["user", "add", "x@elsewhere"], "pw\n").status, 4);
    assert.equal(cli(["user", "passwd", "carol@localhost"], "pw2\n").status, 0);
    assert.equal(cli(["user", "list"]).stdout.trim(), "carol@localhost");
    assert.equal(cli(["user", "del", "carol@localhost"]).status, 0);
    assert.equal(cli(["user", "list"]).stdout.trim(), "");
    const none = cli(["reports"]);
    assert.equal(none.status, 0);
    assert.equal(none.stdout, "");
    assert.match(none.stderr, /no reports/);
    assert.equal(cli(["reports", "--limit", "0"]).status, 2);
    assert.equal(cli(["frobnicate"]).status, 2);
    writeFileSync(cfg, "hosts: 5\n");
    const bad = cli(["check-config"]);
    assert.equal(bad.status, 3);
    assert.match(bad.stderr, /hosts: /);
    rmSync(dir, { recursive: true, force: true });
  });

  it("a storage failure during login closes that stream with internal-server-error; the server keeps serving", async () => {
    const server = await startTestServer();
    await server.accounts.create("alice@localhost", "pw");
    const real = server.storage.accounts.get;
    server.storage.accounts.get = async () => { throw new Error("disk on fire"); };
    const c = await openStream(server.ports.c2sDirectTls!);
    c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from("\0alice\0pw").toString("base64")}</auth>`);
    await c.waitForElement(streamError("internal-server-error"));
    await c.closed;
    server.storage.accounts.get = real;
    const ok = await rawSession(server.ports.c2sDirectTls!, "alice", "pw");
    ok.close();
    await server.cleanup();
  });

  it("auth throttle: free failures, then growing delays, then a ban that expires", () => {
    let now = 0;
    const t = new AuthThrottle({ banAfter: 5, banSeconds: 60, freeFailures: 2, maxDelayMs: 1000 }, () => now);
    // A client that waits for each answer, as the delays mean it to.
    const waiting = () => { const d = t.fail("a"); now += d; return d; };
    assert.deepEqual([waiting(), waiting(), waiting(), waiting()], [0, 0, 250, 500]);
    assert.equal(t.isBanned("a"), false);
    t.fail("a");
    assert.equal(t.isBanned("a"), true);
    assert.equal(t.isBanned("b"), false);
    now += 61_000;
    assert.equal(t.isBanned("a"), false);
  });
});
