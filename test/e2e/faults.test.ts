/**
 * Fault tests (issue 3; HARDENING §5): traffic keeps flowing while a fault is injected; every
 * message the server acknowledged must be delivered (or refused with an error): lost == 0.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { header, openStream, rawSession, NS_STREAMS, type RawClient } from "../helpers/raw.js";
import { Sender, check, deliveries } from "../helpers/traffic.js";

const SM = "urn:xmpp:sm:3";

async function enable(c: RawClient, resume: boolean): Promise<string> {
  const mark = c.elements.length;
  c.send(`<enable xmlns='${SM}'${resume ? " resume='true'" : ""}/>`);
  return (await c.waitForElement((e) => e.is("enabled", SM), 5000, mark)).attrs.id ?? "";
}

async function resume(port: number, user: string, previd: string, h: number): Promise<RawClient> {
  const c = await openStream(port);
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0pw`).toString("base64")}</auth>`);
  await c.waitForElement((e) => e.is("success", "urn:ietf:params:xml:ns:xmpp-sasl"));
  c.restartParser();
  const mark = c.elements.length;
  c.send(header());
  await c.waitForElement((e) => e.is("features", NS_STREAMS), 5000, mark);
  c.send(`<resume xmlns='${SM}' previd='${previd}' h='${h}'/>`);
  await c.waitForElement((e) => e.is("resumed", SM), 5000, mark);
  return c;
}

const countMessages = (c: RawClient) => c.elements.filter((e) => e.is("message")).length;
/** Waits until `c` has received the message with this id. */
const received = (c: RawClient, id: string) => c.waitForElement((e) => e.is("message") && e.attrs.id === id);
const report = (name: string, f: object) => console.log(`# fault ${name}: ${JSON.stringify(f)}`);

describe("fault tests: nothing acknowledged is lost", () => {
  let server: TestServer;
  const port = () => server.ports.c2sDirectTls!;
  before(async () => {
    server = await startTestServer({ streamManagement: { resumeTimeoutSeconds: 1 } });
    for (const u of ["s1", "s2", "s3", "r1", "r2", "r3"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(() => server.cleanup());

  it("1: the receiver's socket dies without a close during traffic, it resumes: all arrive, in order, once", async () => {
    const receiver = await rawSession(port(), "r1", "pw", "phone");
    const previd = await enable(receiver, true);
    receiver.send("<presence/>");
    const sender = new Sender(await rawSession(port(), "s1", "pw", "x"), "f1");
    await enable(sender.client, false);
    for (let n = 0; n < 100; n++) sender.send("r1@localhost/phone", n);
    await received(receiver, "f1-99");
    // The client handled (and acknowledges) the presence reflection and the first 50 messages; then the network drops.
    const handledBeforeDrop = deliveries([receiver.elements], "f1").slice(0, 50);
    assert.deepEqual(handledBeforeDrop, Array.from({ length: 50 }, (_, n) => `f1-${n}`));
    const handled = 1 + handledBeforeDrop.length;
    receiver.send(`<a xmlns='${SM}' h='${handled}'/>`);
    await new Promise((r) => setTimeout(r, 50));
    receiver.socket.destroy();
    for (let n = 100; n < 200; n++) sender.send("r1@localhost/phone", n);
    await sender.settle();
    const back = await resume(port(), "r1", previd, handled);
    await received(back, "f1-199");
    const figures = check(sender, [...handledBeforeDrop, ...deliveries([back.elements], "f1")]);
    report("1 resume", figures);
    assert.equal(figures.lost, 0);
    assert.equal(figures.acked, 200);
    assert.equal(figures.delivered, 200);
    assert.equal(figures.duplicates, 0);
    assert.equal(figures.reordered, 0);
    back.close();
    sender.client.close();
  });

  it("2: the receiver does not come back within the resumption timeout: everything arrives at the next login", async () => {
    const receiver = await rawSession(port(), "r2", "pw", "phone");
    await enable(receiver, true);
    receiver.send("<presence/>");
    const sender = new Sender(await rawSession(port(), "s2", "pw", "x"), "f2");
    await enable(sender.client, false);
    for (let n = 0; n < 50; n++) sender.send("r2@localhost", n);
    await received(receiver, "f2-49");
    receiver.socket.destroy();
    for (let n = 50; n < 100; n++) sender.send("r2@localhost", n);
    await sender.settle();
    await new Promise((r) => setTimeout(r, 1500)); // resumeTimeoutSeconds: 1
    const next = await rawSession(port(), "r2", "pw", "laptop");
    next.send("<presence/>");
    await received(next, "f2-99");
    const delivered = deliveries([next.elements], "f2");
    const figures = check(sender, delivered);
    report("2 resume timeout", { ...figures, deliveredBeforeTheDrop: deliveries([receiver.elements], "f2").length });
    assert.equal(figures.lost, 0);
    assert.equal(figures.acked, 100);
    assert.equal(figures.delivered, 100, "the unacknowledged first 50 and the later 50 all arrive");
    assert.equal(figures.reordered, 0);
    next.close();
    sender.client.close();
  });

  it("3: an offline flush to a client that dies before acknowledging: the rows are there at the next login", async () => {
    const sender = new Sender(await rawSession(port(), "s3", "pw", "x"), "f3");
    await enable(sender.client, false);
    for (let n = 0; n < 30; n++) sender.send("r3@localhost", n);
    await sender.settle();
    assert.equal(await server.storage.offline.count("r3@localhost"), 30);
    const dying = await rawSession(port(), "r3", "pw", "a");
    await enable(dying, false);
    dying.send("<presence/>");
    await received(dying, "f3-29");
    dying.socket.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const rowsAfterDeath = await server.storage.offline.count("r3@localhost");
    const next = await rawSession(port(), "r3", "pw", "b");
    await enable(next, false);
    next.send("<presence/>");
    await received(next, "f3-29");
    next.send(`<a xmlns='${SM}' h='${countMessages(next) + 1}'/>`);
    for (let i = 0; i < 100 && (await server.storage.offline.count("r3@localhost")) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const figures = check(sender, deliveries([next.elements], "f3"));
    report("3 offline flush", { ...figures, rowsAfterDeath, rowsAfterAck: await server.storage.offline.count("r3@localhost") });
    assert.equal(rowsAfterDeath, 30);
    assert.equal(figures.lost, 0);
    assert.equal(figures.delivered, 30);
    assert.equal(await server.storage.offline.count("r3@localhost"), 0);
    next.close();
    sender.client.close();
  });
});

import { randomBytes } from "node:crypto";
import pg from "pg";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";

const pgMissing = await postgresUnavailable();
if (pgMissing) console.log(`# SKIPPED fault 5 (postgres): no database reachable (${pgMissing})`);

describe("fault 5: Postgres connections killed during traffic", { skip: pgMissing ? `Postgres unreachable: ${pgMissing}` : false }, () => {
  it("pg_terminate_backend mid-traffic: writes retry, every message is acknowledged and stored, none errored", async () => {
    const tag = randomBytes(5).toString("hex");
    const schema = `parley_fault_${tag}`;
    const app = `parley-fault-${tag}`;
    const server = await startTestServer({ storage: { driver: "postgres", url: PG_URL, schema, poolSize: 4, applicationName: app } });
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    try {
      await server.accounts.create("s5@localhost", "pw");
      await server.accounts.create("r5@localhost", "pw");
      // Contacts: 300 messages from a stranger would meet the strangers' share of the offline queue.
      await server.storage.roster.put("r5@localhost", { jid: "s5@localhost", groups: [], subscription: "both", ask: false, approved: false });
      const sender = new Sender(await rawSession(server.ports.c2sDirectTls!, "s5", "pw", "x"), "f5");
      await enable(sender.client, false);
      let killed = 0;
      for (let n = 0; n < 300; n++) {
        sender.send("r5@localhost", n);
        if (n % 100 === 50) {
          const r = await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [app]);
          killed += r.rowCount ?? 0;
        }
        if (n % 10 === 0) await new Promise((r) => setTimeout(r, 2));
      }
      await sender.settle(20_000);
      const stored = await server.storage.offline.count("r5@localhost");
      const receiver = await rawSession(server.ports.c2sDirectTls!, "r5", "pw", "r");
      receiver.send("<presence/>");
      if (stored > 0) await receiver.waitForElement((e) => e.is("message") && /^f5-\d+$/.test(e.attrs.id ?? ""));
      await new Promise((r) => setTimeout(r, 500));
      const figures = check(sender, deliveries([receiver.elements], "f5"));
      report("5 pg_terminate_backend", { ...figures, backendsKilled: killed, stored });
      assert.ok(killed > 0, "the fault was injected");
      assert.equal(figures.acked, 300, "every message got an answer");
      assert.equal(figures.lost, 0);
      assert.equal(figures.errored, 0, "the server retried instead of answering with errors");
      assert.equal(figures.delivered, 300);
      assert.equal(figures.reordered, 0, "offline rows keep the sender's order");
      receiver.close();
      sender.client.close();
    } finally {
      await server.cleanup();
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    }
  });
});
