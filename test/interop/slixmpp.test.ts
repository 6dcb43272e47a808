/** Interop: slixmpp (Debian's python3-slixmpp), a third-party client library, against a real Parley server. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { startTestServer, type TestServer } from "../helpers/server.js";

const PYTHON = "/usr/bin/python3";
const available = spawnSync(PYTHON, ["-c", "import slixmpp"]).status === 0;
if (!available) console.log("# SKIPPED interop/slixmpp: python3-slixmpp is not installed (apt-get install python3-slixmpp)");

describe("interop: slixmpp", { skip: available ? false : "python3-slixmpp not installed" }, () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    await server.accounts.create("sli1@localhost", "pw-one");
    await server.accounts.create("sli2@localhost", "pw-two");
  });
  after(() => server.cleanup());

  it("two slixmpp clients log in over STARTTLS, fetch their rosters and exchange a chat message", async () => {
    const script = fileURLToPath(new URL("./slixmpp_pair.py", import.meta.url));
    const child = spawn(PYTHON, [script, String(server.ports.c2s), "sli1@localhost", "pw-one", "sli2@localhost", "pw-two"]);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    const code = await new Promise<number | null>((r) => child.on("close", r));
    const line = out.trim().split("\n").pop() ?? "{}";
    const result = JSON.parse(line) as { received: string | null; from?: string; roster_ok: boolean; mechanisms: string[] };
    assert.equal(code, 0, `slixmpp failed: ${err.slice(-2000)}`);
    assert.equal(result.received, "hello from slixmpp");
    assert.match(result.from!, /^sli1@localhost\//);
    assert.equal(result.roster_ok, true);
    // slixmpp 1.8 asks for tls-unique channel binding, which TLS 1.3 does not define (RFC 9266),
    // then sends SCRAM with the 'y' flag, which RFC 5802 §6 obliges us to refuse when we offer
    // -PLUS; so it ends on PLAIN (over TLS). What matters here is that it gets in.
    assert.equal(result.mechanisms.length, 2);
    console.log(`# slixmpp used: ${result.mechanisms.join(", ")}`);
  });

  it("carbons, MAM, PEP, HTTP upload and MUC work with slixmpp's XEP-0280, XEP-0313, XEP-0172/XEP-0060, XEP-0363 and XEP-0045 plugins", async () => {
    await server.accounts.create("alice@localhost", "pw-a");
    await server.accounts.create("bob@localhost", "pw-b");
    for (const [a, b] of [["alice", "bob"], ["bob", "alice"]]) {
      await server.storage.roster.put(`${a}@localhost`, { jid: `${b}@localhost`, groups: [], subscription: "both", ask: false, approved: false });
    }
    // A persistent, open room for slixmpp's XEP-0045 plugin.
    await server.storage.rooms.put({ jid: "lounge@conference.localhost", config: JSON.stringify({ persistent: true, name: "Lounge" }), subject: "", createdAt: Date.now() });
    const script = fileURLToPath(new URL("./slixmpp_features.py", import.meta.url));
    const child = spawn(PYTHON, [script, String(server.ports.c2s), "pw-a", "pw-b"]);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    const timer = setTimeout(() => child.kill(), 45_000);
    const code = await new Promise<number | null>((r) => child.on("close", r));
    clearTimeout(timer);
    assert.equal(code, 0, `slixmpp failed: ${err.slice(-2000)}`);
    const result = JSON.parse(out.trim().split("\n").pop() ?? "{}") as Record<string, unknown>;
    console.log(`# slixmpp features: ${JSON.stringify(result)}`);
    assert.equal(result.carbon_received, "hi alice");
    assert.equal(result.carbon_sent, "hi bob");
    assert.deepEqual(result.mam_bodies, ["hi alice", "hi bob"]);
    assert.equal(result.nick, "Alice from slixmpp");
    assert.equal(result.nick_event, "Alice from slixmpp", "slixmpp's +notify (XEP-0115 caps) brought the PEP event");
    assert.match(String(result.upload_url), /^https:\/\/localhost:\d+\/upload\/[A-Za-z0-9_-]{22}\/photo\.jpg$/);
    assert.equal(result.upload_roundtrip, true, "the bytes slixmpp uploaded come back");
    assert.equal(result.max_file_size, 100 * 1024 * 1024);
    assert.deepEqual(result.muc_roster, ["alice", "bob"]);
    assert.equal(result.muc_message, "hello room");
  });

  it("join_muc_wait() returns for a room slixmpp creates and for one it joins later: every join ends with the subject (XEP-0045 §7.2.15)", async () => {
    const script = fileURLToPath(new URL("./slixmpp_muc.py", import.meta.url));
    const child = spawn(PYTHON, [script, String(server.ports.c2s), "pw-a", "pw-b"]);
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    const timer = setTimeout(() => child.kill(), 45_000);
    const code = await new Promise<number | null>((r) => child.on("close", r));
    clearTimeout(timer);
    assert.equal(code, 0, `slixmpp failed (a join that never ends is a TimeoutError): ${err.slice(-2000)}`);
    const result = JSON.parse(out.trim().split("\n").pop() ?? "{}") as Record<string, unknown>;
    console.log(`# slixmpp MUC joins: ${JSON.stringify(result)}`);
    assert.deepEqual(result.created_codes, [110, 170, 201]);
    assert.equal(result.created_subject, "", "a new room's subject is empty");
    assert.equal(result.joined_subject, "Fresh paint");
    assert.deepEqual(result.joined_history, ["first", "second"], "history before the subject, the subject change itself not among it");
    assert.deepEqual(result.joined_occupants, ["alice", "bob"], "slixmpp counts its own presence among the occupants");
  });
});
