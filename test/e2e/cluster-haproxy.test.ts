/**
 * Three cluster nodes on loopback behind a real HAProxy in TCP mode (docs/haproxy.cfg, docs/CLUSTER.md):
 * users spread over the nodes subscribe, chat and see presence; carbons reach resources on other
 * nodes; a group chat room has an occupant on each node; a phone whose connection drops reconnects through HAProxy, lands on another node and
 * resumes its session there (XEP-0198 §5), once with xmpp.js (@xmpp/client, which reconnects and
 * resumes by itself) and once on a raw socket where the exact replay is checked.
 *
 * How the reconnect is made to land elsewhere: HAProxy has, besides the shared frontend, one
 * frontend for the xmpp.js phone alone with its own round-robin backend (so its second connection
 * goes to the next server), and one frontend per node pinned to that node's server (for the raw
 * client). Real Redis and Postgres; HAProxy from Debian (.ci/run installs it): without it, SKIPPED.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { RawClient, authenticatedStream, rawSession, tree } from "../helpers/raw.js";
import { groupchat, join as joinRoom, presenceOf, unlock } from "../helpers/muc.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freePort, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { RemoteSession } from "../../src/cluster/sessions.js";

const SM = "urn:xmpp:sm:3";
const CARBONS = "urn:xmpp:carbons:2";
const run = promisify(execFile);
const missing = (await postgresUnavailable()) ?? (await redisUnavailable())
  ?? (await run("haproxy", ["-v"]).then(() => undefined, (err: Error) => `haproxy not installed (${err.message})`));
if (missing) console.log(`# SKIPPED cluster behind HAProxy: ${missing}`);

const message = (id: string) => (e: Element) => e.is("message") && e.attrs.id === id;
const stanzas = (c: RawClient, since: number) => c.elements.slice(since).filter((e) => ["message", "presence", "iq"].includes(e.name));

/** Sent, delivered (distinct ids received), duplicates (receptions beyond the first), lost. */
function tally(sent: readonly string[], received: readonly string[]): { delivered: number; duplicates: number; lost: number } {
  const mine = received.filter((id) => sent.includes(id));
  const unique = new Set(mine);
  return { delivered: unique.size, duplicates: mine.length - unique.size, lost: sent.length - unique.size };
}

describe("three nodes behind HAProxy (e2e)", { skip: missing ?? false }, () => {
  const schema = `parley_lb_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 2 };
  const ids = ["a", "b", "c"] as const;
  const nodes: TestServer[] = [];
  const raws: RawClient[] = [];
  const xmpps: Connected[] = [];
  const dir = mkdtempSync(join(tmpdir(), "parley-haproxy-"));
  const ports = { shared: 0, phone: 0, pinned: [0, 0, 0] };
  let proxy: ChildProcess | undefined;
  const nodeOf = (full: string) => nodes.findIndex((n) => { const s = n.sessions.get(full); return s !== undefined && !(s instanceof RemoteSession); });
  const raw = async (port: number, user: string, resource: string) => { const c = await rawSession(port, user, "pw", resource); raws.push(c); return c; };
  const everywhere = (full: string, what: string, pred: (n: TestServer) => boolean = (n) => n.sessions.get(full) !== undefined) =>
    until(() => nodes.every(pred), `${full} ${what} on every node`);

  before(async () => {
    // Behind a TCP proxy every client has the proxy's address (docs/haproxy.cfg).
    for (const id of ids) nodes.push(await startTestServer({ storage, limits: { maxConnectionsPerAddress: 1000 }, cluster: { nodeId: id, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 0.5, nodeTimeoutSeconds: 2 } }));
    for (const user of ["alice", "bob", "carol", "grace", "dora", "erin", "rita", "sam", "tess"]) await nodes[0]!.accounts.create(`${user}@localhost`, "pw");
    ports.shared = await freePort();
    ports.phone = await freePort();
    ports.pinned = [await freePort(), await freePort(), await freePort()];
    const servers = nodes.map((n, i) => `    server n${i} 127.0.0.1:${n.ports.c2sDirectTls}`);
    // The TCP part of docs/haproxy.cfg, on loopback.
    writeFileSync(join(dir, "haproxy.cfg"), [
      "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 1m", "    timeout server 1m",
      "frontend shared", `    bind 127.0.0.1:${ports.shared}`, "    default_backend all",
      "backend all", "    balance roundrobin", ...servers,
      "frontend phone", `    bind 127.0.0.1:${ports.phone}`, "    default_backend phone",
      "backend phone", "    balance roundrobin", ...servers,
      ...nodes.flatMap((_, i) => [`frontend pinned_${i}`, `    bind 127.0.0.1:${ports.pinned[i]}`, `    default_backend node_${i}`, `backend node_${i}`, servers[i]!]),
      "",
    ].join("\n"));
    proxy = spawn("haproxy", ["-db", "-f", join(dir, "haproxy.cfg")], { stdio: ["ignore", "inherit", "inherit"] });
    for (const port of [ports.shared, ports.phone, ...ports.pinned]) {
      await until(async () => {
        const probe = createServer();
        return new Promise<boolean>((resolve) => { probe.once("error", () => resolve(true)); probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(false))); });
      }, `haproxy listening on ${port}`, 100, 50);
    }
  });

  after(async () => {
    for (const c of xmpps) await c.stop();
    for (const c of raws) c.close();
    proxy?.kill("SIGTERM");
    for (const n of nodes) await n.cleanup();
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
    rmSync(dir, { recursive: true, force: true });
  });

  it("users on three nodes subscribe, see each other's presence and chat", async () => {
    const [alice, bob, carol] = [await raw(ports.shared, "alice", "lb"), await raw(ports.shared, "bob", "lb"), await raw(ports.shared, "carol", "lb")];
    const spread = ["alice", "bob", "carol"].map((u) => nodeOf(`${u}@localhost/lb`));
    assert.deepEqual([...spread].sort(), [0, 1, 2], "round robin: one user per node");
    for (const c of [alice, bob]) {
      c.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
      await c.waitForElement((e) => e.is("iq") && e.attrs.id === "roster" && e.attrs.type === "result", 10_000);
    }
    for (const c of [alice, bob, carol]) c.send("<presence/>");
    for (const u of ["alice", "bob", "carol"]) await everywhere(`${u}@localhost/lb`, "available", (n) => n.sessions.get(`${u}@localhost/lb`)?.presence !== undefined);
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    await bob.waitForElement((e) => e.is("presence") && e.attrs.type === "subscribe" && e.attrs.from === "alice@localhost", 10_000);
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    await alice.waitForElement((e) => e.is("presence") && e.attrs.type === "subscribed" && e.attrs.from === "bob@localhost", 10_000);
    const mark = alice.elements.length;
    bob.send("<presence><show>away</show></presence>");
    // RFC 6121 §4.4: bob's broadcast reaches his subscriber on another node.
    await alice.waitForElement((e) => e.is("presence") && e.attrs.from === "bob@localhost/lb" && e.getChildText("show") === "away", 10_000, mark);
    const sent = ["h1", "h2", "h3"];
    alice.send("<message to='bob@localhost' type='chat' id='h1'><body>through haproxy</body></message>");
    bob.send("<message to='carol@localhost/lb' type='chat' id='h2'><body>and on</body></message>");
    carol.send("<message to='alice@localhost' type='chat' id='h3'><body>and back</body></message>");
    assert.equal((await bob.waitForElement(message("h1"), 10_000)).attrs.from, "alice@localhost/lb");
    assert.equal((await carol.waitForElement(message("h2"), 10_000)).attrs.from, "bob@localhost/lb");
    assert.equal((await alice.waitForElement(message("h3"), 10_000)).attrs.from, "carol@localhost/lb");
    const received = [alice, bob, carol].flatMap((c) => c.elements.filter((e) => e.is("message")).map((e) => e.attrs.id as string));
    const counts = tally(sent, received);
    assert.deepEqual(counts, { delivered: 3, duplicates: 0, lost: 0 });
    console.log(`# haproxy chat across nodes ${spread.map((i) => ids[i]).join("/")}: sent 3, delivered ${counts.delivered}, duplicates ${counts.duplicates}, lost ${counts.lost}`);
  });

  it("carbons reach the user's resource on another node (XEP-0280)", async () => {
    const desk = await raw(ports.pinned[0]!, "grace", "desk");
    const phone = await raw(ports.pinned[1]!, "grace", "phone");
    const erin = await raw(ports.pinned[2]!, "erin", "x");
    assert.deepEqual([nodeOf("grace@localhost/desk"), nodeOf("grace@localhost/phone"), nodeOf("erin@localhost/x")], [0, 1, 2]);
    phone.send(`<iq type='set' id='carbons'><enable xmlns='${CARBONS}'/></iq>`);
    await phone.waitForElement((e) => e.is("iq") && e.attrs.id === "carbons" && e.attrs.type === "result", 10_000);
    await everywhere("grace@localhost/phone", "with carbons", (n) => n.sessions.get("grace@localhost/phone")?.flags.has("carbons") === true);
    const carbon = (kind: string, id: string) => (e: Element) => e.is("message") && e.getChild(kind, CARBONS)?.getChild("forwarded", "urn:xmpp:forward:0")?.getChild("message")?.attrs.id === id;
    erin.send("<message to='grace@localhost/desk' type='chat' id='c-in'><body>to the desk</body></message>");
    await desk.waitForElement(message("c-in"), 10_000);
    assert.equal((await phone.waitForElement(carbon("received", "c-in"), 10_000)).attrs.from, "grace@localhost");
    desk.send("<message to='erin@localhost/x' type='chat' id='c-out'><body>from the desk</body></message>");
    await erin.waitForElement(message("c-out"), 10_000);
    await phone.waitForElement(carbon("sent", "c-out"), 10_000);
    console.log("# haproxy carbons: desk on a, phone on b, contact on c: received and sent copies delivered");
  });

  it("a room with an occupant on each of the three nodes: presence and messages reach everyone (XEP-0045)", async () => {
    const room = "haproxy@conference.localhost";
    const occupants: Array<[RawClient, string]> = [];
    for (const [i, nick] of ["rita", "sam", "tess"].entries()) occupants.push([await raw(ports.pinned[i]!, nick, "lb"), nick]);
    assert.deepEqual(["rita", "sam", "tess"].map((u) => nodeOf(`${u}@localhost/lb`)), [0, 1, 2]);
    for (const [, nick] of occupants.slice(1)) await everywhere(`${nick}@localhost/lb`, "known");
    const owner = occupants[0]![0];
    await joinRoom(owner, room, "rita");
    await unlock(owner, room);
    for (const [client, nick] of occupants.slice(1)) await joinRoom(client, room, nick);
    for (const [client] of occupants) for (const [, nick] of occupants) await client.waitForElement(presenceOf(room, nick), 10_000);
    const sent = occupants.map(([, nick]) => `room-${nick}`);
    for (const [client, nick] of occupants) client.send(`<message to='${room}' type='groupchat' id='room-${nick}'><body>from ${nick}</body></message>`);
    for (const [client] of occupants) for (const id of sent) await client.waitForElement(groupchat(id), 10_000);
    const hosts = nodes.map((n) => n.cluster()!.hostedRooms);
    assert.equal(hosts.reduce((a, b) => a + b, 0), 1, "one node hosts the room");
    let duplicates = 0;
    for (const [client] of occupants) for (const id of sent) duplicates += client.elements.filter(groupchat(id)).length - 1;
    assert.equal(duplicates, 0);
    console.log(`# haproxy room: occupants on a/b/c, host ${ids[hosts.indexOf(1)]}: sent ${sent.length}, delivered ${sent.length * occupants.length} of ${sent.length * occupants.length}, duplicates ${duplicates}, lost 0`);
  });

  it("xmpp.js: a phone's connection drops, it reconnects through HAProxy, lands on another node and resumes", async () => {
    const phone = await connect({ port: ports.phone, directTls: true, username: "dora", password: "pw", resource: "phone" });
    xmpps.push(phone);
    const sm = (phone.xmpp as unknown as { streamManagement: { id: string; enabled: boolean; on(e: string, f: () => void): void } }).streamManagement;
    await until(() => sm.enabled && sm.id !== "", "xmpp.js enabled stream management with resumption");
    const full = "dora@localhost/phone";
    const before = nodeOf(full);
    await everywhere(full, "with its resumption id", (n) => n.sessions.get(full)?.resumeId === sm.id);
    const alice = await raw(ports.pinned[(before + 2) % 3]!, "alice", "sender");
    alice.send(`<enable xmlns='${SM}'/>`);
    await alice.waitForElement((e) => e.is("enabled", SM), 10_000);
    const sent = ["x1", "x2", "x3", "x4", "x5", "x6"];
    for (const id of sent.slice(0, 3)) alice.send(`<message to='${full}' type='chat' id='${id}'><body>${id}</body></message>`);
    await phone.waitFor(message("x3"), 10_000);
    const resumed = new Promise<void>((resolve) => sm.on("resumed", resolve));
    // The helper turned xmpp.js's reconnect off; this phone reconnects as a real one does.
    (phone.xmpp.reconnect as unknown as { start(): void }).start();
    (phone.xmpp as unknown as { socket: { socket: { destroy(): void } } }).socket.socket.destroy();
    await until(() => nodes[before]!.sessions.get(full)?.hibernating === true, "the session hibernates where it was");
    for (const id of sent.slice(3)) alice.send(`<message to='${full}' type='chat' id='${id}'><body>${id}</body></message>`);
    await resumed;
    await phone.waitFor(message("x6"), 10_000);
    // The sender's 'h': the server took custody of all six (XEP-0198 §4).
    const aliceMark = alice.elements.length;
    alice.send(`<r xmlns='${SM}'/>`);
    const acked = Number((await alice.waitForElement((e) => e.is("a", SM), 10_000, aliceMark)).attrs.h);
    assert.equal(acked, sent.length);
    const after = nodeOf(full);
    assert.notEqual(after, before, "the phone's backend sent the second connection to another node");
    assert.equal(phone.jid, full);
    const received = phone.inbox.filter((e) => e.is("message")).map((e) => e.attrs.id as string);
    const counts = tally(sent, received);
    assert.equal(counts.lost, 0);
    assert.deepEqual(received.filter((id, i) => received.indexOf(id) === i), sent, "in order");
    console.log(`# haproxy xmpp.js resume node ${ids[before]} → ${ids[after]}: sent ${sent.length}, acked to the sender ${acked}, delivered ${counts.delivered}, duplicates ${counts.duplicates} (XEP-0198 resends only what was written and not acknowledged), lost ${counts.lost}`);
  });

  it("raw socket: the replay after a resumption on another node is exactly what the client did not acknowledge", async () => {
    const bob = await raw(ports.pinned[0]!, "bob", "raw-phone");
    const mark = bob.elements.length;
    bob.send(`<enable xmlns='${SM}' resume='true'/>`);
    const previd = (await bob.waitForElement((e) => e.is("enabled", SM), 10_000, mark)).attrs.id as string;
    const since = bob.elements.length;
    const full = "bob@localhost/raw-phone";
    await everywhere(full, "with its resumption id", (n) => n.sessions.get(full)?.resumeId === previd);
    const carol = await raw(ports.pinned[1]!, "carol", "sender");
    const sent = ["y1", "y2", "y3", "y4"];
    for (const id of sent.slice(0, 3)) carol.send(`<message to='${full}' type='chat' id='${id}'><body>${id}</body></message>`);
    await bob.waitForElement(message("y3"), 10_000, since);
    const h = stanzas(bob, since).findIndex((e) => e.attrs.id === "y1") + 1;
    bob.send(`<a xmlns='${SM}' h='${h}'/>`);
    const first = stanzas(bob, since).filter((e) => e.is("message")).map((e) => e.attrs.id as string);
    bob.socket.destroy();
    await until(() => nodes[0]!.sessions.get(full)?.hibernating === true, "bob's session hibernates on node a");
    carol.send(`<message to='${full}' type='chat' id='y4'><body>y4</body></message>`);
    const back = await authenticatedStream(ports.pinned[2]!, "bob", "pw");
    raws.push(back);
    const at = back.elements.length;
    back.send(`<resume xmlns='${SM}' previd='${previd}' h='${h}'/>`);
    assert.deepEqual(tree(await back.waitForElement((e) => e.is("resumed", SM), 10_000, at)), tree(xml("resumed", { xmlns: SM, h: "0", previd })));
    await back.waitForElement(message("y4"), 10_000, at);
    const replay = back.elements.slice(at).filter((e) => e.is("message")).map((e) => e.attrs.id as string);
    assert.deepEqual(replay, ["y2", "y3", "y4"], "y1 was acknowledged on node a: not sent again");
    assert.equal(nodeOf(full), 2);
    const counts = tally(sent, [...first, ...replay]);
    console.log(`# haproxy raw resume node a → c: sent ${sent.length}, acked ${h === 0 ? 0 : 1} before the drop, delivered ${counts.delivered}, duplicates ${counts.duplicates} (y2, y3: written, not acknowledged), lost ${counts.lost}`);
  });
});
