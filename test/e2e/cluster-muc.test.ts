/**
 * Group chat on a cluster (docs/CLUSTER.md, "Rooms"), on real Redis and Postgres: nodes A and B in
 * this process, node C a child process (so it can be killed with SIGKILL). A room with occupants
 * on all three nodes: joins, presence, messages from each node to all, history and MAM through the
 * host, and a room message crossing the bus once per node with occupants. Then the host of a room
 * is killed: another node takes the room over with its occupant list, and the occupants left keep
 * chatting.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { Redis } from "ioredis";
import type { Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { groupchat, join, presenceOf, unlock } from "../helpers/muc.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";

const NS_SM = "urn:xmpp:sm:3";
const MAM = "urn:xmpp:mam:2";
const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster MUC e2e: ${missing}`);

// Longer than test/e2e/cluster.test.ts's 0.25 s / 1 s: this file runs three nodes and a dozen
// clients on a shared 2-core machine, and a node whose event loop stalls past the timeout is
// taken for dead (and reaped) while it runs.
const HEARTBEAT_SECONDS = 0.5;
const NODE_TIMEOUT_SECONDS = 3;

const count = (c: RawClient, pred: (e: Element) => boolean) => c.elements.filter(pred).length;

async function enableSm(c: RawClient): Promise<number> {
  const mark = c.elements.length;
  c.send(`<enable xmlns='${NS_SM}'/>`);
  await c.waitForElement((e) => e.is("enabled", NS_SM), 10_000, mark);
  return c.elements.length;
}

describe("cluster group chat (e2e, Redis + Postgres)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  const schema = `parley_cluster_muc_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 4 };
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: HEARTBEAT_SECONDS, nodeTimeoutSeconds: NODE_TIMEOUT_SECONDS });
  let a: TestServer;
  let b: TestServer;
  let c: ChildProcess;
  let cPort: number;
  const clients: RawClient[] = [];
  const login = async (port: number, user: string, resource: string) => {
    const client = await rawSession(port, user, "pw", resource);
    clients.push(client);
    return client;
  };
  /** Nodes A and B know the session (node C's knowledge is probed by delivery, see `reaches`). */
  const known = (full: string) => until(() => a.sessions.get(full) !== undefined && b.sessions.get(full) !== undefined, `${full} known on nodes a and b`);
  /** A chat message from `from` reaches `to`: the sender's node knows the recipient's session. */
  const reaches = async (from: RawClient, fromJid: string, to: RawClient, toJid: string) => {
    const id = `probe-${randomBytes(4).toString("hex")}`;
    await until(async () => {
      from.send(`<message to='${toJid}' type='chat' id='${id}'><body>probe</body></message>`);
      return to.waitForElement((e) => e.is("message") && e.attrs.id === id, 500).then(() => true, () => false);
    }, `${fromJid}'s node knows ${toJid}`, 40, 0);
  };

  before(async () => {
    a = await startTestServer({ storage, cluster: cluster("a") });
    b = await startTestServer({ storage, cluster: cluster("b") });
    for (const user of ["ann", "ben", "bea", "cal", "cat", "dan", "owner", "eve", "fay", "gus", "hal", "ivy"]) await a.accounts.create(`${user}@localhost`, "pw");
    c = spawn(process.execPath, ["--import", "tsx", "test/helpers/cluster-node.ts", JSON.stringify({ storage, cluster: cluster("c") })], { stdio: ["ignore", "pipe", "inherit"] });
    cPort = await new Promise<number>((resolve, reject) => {
      createInterface({ input: c.stdout! }).once("line", (line) => resolve((JSON.parse(line) as { c2sDirectTls: number }).c2sDirectTls));
      c.once("exit", (code) => reject(new Error(`node c exited (${code})`)));
    });
  });

  after(async () => {
    for (const client of clients) client.close();
    c?.kill("SIGKILL");
    await a?.cleanup();
    await b?.cleanup();
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
  });

  it("a room with occupants on three nodes: joins, presence, messages from each node to all, once per node on the bus; history and MAM through the host", async () => {
    const room = "lobby@conference.localhost";
    const ann = await login(a.ports.c2sDirectTls!, "ann", "pc");
    const ben = await login(b.ports.c2sDirectTls!, "ben", "pc");
    const bea = await login(b.ports.c2sDirectTls!, "bea", "pc");
    const cal = await login(cPort, "cal", "pc");
    const cat = await login(cPort, "cat", "pc");
    for (const full of ["ben", "bea", "cal", "cat"].map((u) => `${u}@localhost/pc`)) await known(full);
    await reaches(cal, "cal", ann, "ann@localhost/pc");

    // The first stanza for the room reaches node a: a takes the lease and hosts the room.
    await join(ann, room, "ann");
    await unlock(ann, room);
    assert.equal(a.cluster()!.hostedRooms, 1);
    assert.equal(b.cluster()!.hostedRooms, 0);
    const occupants: Array<[RawClient, string]> = [[ann, "ann"], [ben, "ben"], [bea, "bea"], [cal, "cal"], [cat, "cat"]];
    for (const [client, nick] of occupants.slice(1)) await join(client, room, nick);
    // Everyone sees everyone's presence, wherever their nodes are (§7.2.3).
    for (const [client] of occupants) {
      for (const [, nick] of occupants) await client.waitForElement(presenceOf(room, nick), 10_000);
    }
    assert.equal(b.cluster()!.hostedRooms, 0, "node b passes the room's stanzas on and hosts nothing");

    // A message from each node reaches every occupant, with the room's stanza-id (XEP-0359).
    for (const [client, nick] of [[ann, "ann"], [ben, "ben"], [cat, "cat"]] as const) {
      client.send(`<message to='${room}' type='groupchat' id='from-${nick}'><body>hello from ${nick}</body></message>`);
      for (const [receiver] of occupants) {
        const got = await receiver.waitForElement(groupchat(`from-${nick}`), 10_000);
        assert.equal(got.attrs.from, `${room}/${nick}`);
        assert.ok(got.getChild("stanza-id", "urn:xmpp:sid:0")?.attrs.id);
      }
    }

    // Once per node, not once per occupant: one fanout entry to b and one to c for four remote occupants.
    const before = a.cluster()!.sent;
    ann.send(`<message to='${room}' type='groupchat' id='counted'><body>counted</body></message>`);
    for (const [receiver] of occupants) await receiver.waitForElement(groupchat("counted"), 10_000);
    const after = a.cluster()!.sent;
    const fanouts = after.fanout - before.fanout;
    const perOccupant = after.stanza - before.stanza;
    console.log(`# cluster MUC: one room message to 5 occupants (1 on the host, 2 on each of 2 other nodes): ${fanouts} fanout bus entries, ${perOccupant} per-occupant entries`);
    assert.equal(fanouts, 2);
    assert.equal(perOccupant, 0);
    for (const [receiver] of occupants) assert.equal(count(receiver, groupchat("counted")), 1);

    // History on join (§7.2.14) and the room's archive (XEP-0313), asked through nodes b and c.
    const dan = await login(b.ports.c2sDirectTls!, "dan", "pc");
    await known("dan@localhost/pc");
    const mark = dan.elements.length;
    await join(dan, room, "dan", "<history maxstanzas='10'/>");
    const history = dan.elements.slice(mark).filter((e) => e.is("message") && e.getChild("delay", "urn:xmpp:delay"));
    assert.deepEqual(history.map((m) => m.getChildText("body")), ["hello from ann", "hello from ben", "hello from cat", "counted"]);
    cal.send(`<iq type='set' id='mam1' to='${room}'><query xmlns='${MAM}' queryid='q1'/></iq>`);
    const fin = await cal.waitForElement((e) => e.is("iq") && e.attrs.id === "mam1", 10_000);
    assert.equal(fin.attrs.type, "result");
    const results = cal.elements.filter((e) => e.is("message") && e.getChild("result", MAM)?.attrs.queryid === "q1");
    assert.deepEqual(results.map((m) => m.getChild("result", MAM)!.getChild("forwarded", "urn:xmpp:forward:0")!.getChild("message")!.getChildText("body")),
      ["hello from ann", "hello from ben", "hello from cat", "counted"]);

    // A client on another node leaving (its session ends) is out of the room for everyone.
    bea.close();
    for (const [client] of [occupants[0]!, occupants[1]!, occupants[3]!]) await client.waitForElement(presenceOf(room, "bea", "unavailable"), 10_000);
  });

  it("a clean stop of the room's host: the room goes to another node, the stopped node's occupants leave it, the others stay", async () => {
    const room = "handover@conference.localhost";
    const d = await startTestServer({ storage, cluster: cluster("d") });
    try {
      const gus = await login(d.ports.c2sDirectTls!, "gus", "pc");
      const hal = await login(a.ports.c2sDirectTls!, "hal", "pc");
      const ivy = await login(b.ports.c2sDirectTls!, "ivy", "pc");
      for (const full of ["gus", "hal", "ivy"].map((u) => `${u}@localhost/pc`)) await known(full);
      await until(() => d.sessions.get("hal@localhost/pc") !== undefined && d.sessions.get("ivy@localhost/pc") !== undefined, "node d knows hal and ivy");
      await join(gus, room, "gus");
      await unlock(gus, room);
      await join(hal, room, "hal");
      await join(ivy, room, "ivy");
      assert.equal(d.cluster()!.hostedRooms, 1);
      await d.stop();
      // Gus's session ended with the node, so he leaves (his unavailable presence to the room, or the
      // adopting node finding his session gone); the survivor that reaps node d adopts its rooms.
      for (const client of [hal, ivy]) await client.waitForElement(presenceOf(room, "gus", "unavailable"), 15_000);
      const redis = new Redis(REDIS_URL);
      try {
        await until(async () => ["a", "b", "c"].includes((await redis.get(`${keyPrefix}:room:${room}:host`)) ?? ""), "a surviving node holds the room's lease");
        assert.deepEqual(Object.keys(await redis.hgetall(`${keyPrefix}:room:${room}:occupants`)).sort(), ["hal", "ivy"]);
      } finally {
        redis.disconnect();
      }
      hal.send(`<message to='${room}' type='groupchat' id='handed-over'><body>still here</body></message>`);
      for (const client of [hal, ivy]) await client.waitForElement(groupchat("handed-over"), 10_000);
      // They stayed in the room all along: never told they were out (§7.2 status 332 is for a service going down).
      assert.equal(hal.anyElement(presenceOf(room, "hal", "unavailable")), false);
      assert.equal(ivy.anyElement(presenceOf(room, "ivy", "unavailable")), false);
    } finally {
      await d.cleanup();
    }
  });

  it("kill -9 of the room's host: another node takes the room with its occupants, and they keep chatting", async () => {
    const room = "crash@conference.localhost";
    const owner = await login(cPort, "owner", "pc");
    const eve = await login(a.ports.c2sDirectTls!, "eve", "pc");
    const fay = await login(b.ports.c2sDirectTls!, "fay", "pc");
    await known("owner@localhost/pc");
    await known("eve@localhost/pc");
    await known("fay@localhost/pc");
    await reaches(owner, "owner", eve, "eve@localhost/pc");
    await reaches(owner, "owner", fay, "fay@localhost/pc");
    // The first stanza reaches node c: c hosts the room.
    await join(owner, room, "owner");
    await unlock(owner, room);
    await join(eve, room, "eve");
    await join(fay, room, "fay");
    await eve.waitForElement(presenceOf(room, "fay"), 10_000);
    const redis = new Redis(REDIS_URL);
    try {
      assert.equal(await redis.get(`${keyPrefix}:room:${room}:host`), "c");
      assert.deepEqual(Object.keys(await redis.hgetall(`${keyPrefix}:room:${room}:occupants`)).sort(), ["eve", "fay", "owner"]);
    } finally {
      redis.disconnect();
    }
    const eveSince = await enableSm(eve);
    const faySince = await enableSm(fay);

    const killedAt = Date.now();
    c.kill("SIGKILL");
    await owner.closed;
    // Sent from the moment of the kill on: the first ones go to the dead host's inbox.
    const PER_SENDER = 8; // 16 messages and one more: within the 20 of history a join gets
    const sent: Array<{ id: string; to: RawClient }> = [];
    for (let i = 0; i < PER_SENDER; i++) {
      for (const [sender, nick, other] of [[eve, "eve", fay], [fay, "fay", eve]] as const) {
        const id = `${nick}-${i}`;
        sender.send(`<message to='${room}' type='groupchat' id='${id}'><body>${id}</body></message>`);
        sent.push({ id, to: other });
      }
      if (i === 0) await new Promise((r) => setTimeout(r, 300));
    }
    let acked = 0;
    for (const [client, since] of [[eve, eveSince], [fay, faySince]] as const) {
      client.send(`<r xmlns='${NS_SM}'/>`);
      const a1 = await client.waitForElement((e) => e.is("a", NS_SM) && Number(e.attrs.h) >= PER_SENDER, 10_000, since);
      acked += Number(a1.attrs.h);
    }
    // The occupant whose node died is gone for the others (its session ended with its node).
    for (const client of [eve, fay]) await client.waitForElement(presenceOf(room, "owner", "unavailable"), 15_000);
    const tookOverAfterMs = Date.now() - killedAt;
    const lease = new Redis(REDIS_URL);
    try {
      await until(async () => ["a", "b"].includes((await lease.get(`${keyPrefix}:room:${room}:host`)) ?? ""), "a surviving node holds the room's lease");
    } finally {
      lease.disconnect();
    }
    const arrived = async () => {
      await Promise.all(sent.map(({ id, to }) => to.waitForElement(groupchat(id), 15_000).catch(() => undefined)));
    };
    await arrived();
    const delivered = sent.filter(({ id, to }) => count(to, groupchat(id)) > 0).length;
    const duplicates = sent.reduce((n, { id, to }) => n + Math.max(0, count(to, groupchat(id)) - 1), 0);
    console.log(`# cluster MUC kill -9 of the host: sent ${sent.length}, acked ${acked}, delivered ${delivered}, duplicates ${duplicates}, lost ${sent.length - delivered}; the room taken over and the dead node's occupant gone after ${tookOverAfterMs} ms (heartbeat ${HEARTBEAT_SECONDS * 1000} ms, node timeout ${NODE_TIMEOUT_SECONDS * 1000} ms)`);
    assert.equal(acked, sent.length);
    assert.equal(delivered, sent.length);

    // After the takeover: chatting goes on, and a new occupant gets the whole history.
    eve.send(`<message to='${room}' type='groupchat' id='after'><body>after the takeover</body></message>`);
    await fay.waitForElement(groupchat("after"), 10_000);
    const owner2 = await login(a.ports.c2sDirectTls!, "owner", "again");
    await known("owner@localhost/again");
    const mark = owner2.elements.length;
    await join(owner2, room, "owner", "<history maxstanzas='50'/>");
    const history = owner2.elements.slice(mark).filter((e) => e.is("message") && e.getChild("delay", "urn:xmpp:delay")).map((m) => m.attrs.id);
    for (const { id } of sent) assert.ok(history.includes(id), `${id} in the room's history`);
  });
});
