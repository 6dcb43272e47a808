/** The whole server on the Postgres driver: login, chat to an offline user, delivery on login. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";

const missing = await postgresUnavailable();
if (missing) console.log(`# SKIPPED e2e on postgres: no database reachable (${missing})`);

describe("server on postgres (e2e)", { skip: missing ? `Postgres unreachable: ${missing}` : false }, () => {
  let server: TestServer;
  const schema = `parley_e2e_${randomBytes(6).toString("hex")}`;
  before(async () => {
    server = await startTestServer({ storage: { driver: "postgres", url: PG_URL, schema, poolSize: 4 } });
    await server.accounts.create("alice@localhost", "pw");
    await server.accounts.create("bob@localhost", "pw");
  });
  after(async () => {
    await server.cleanup();
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await c.end();
  });

  it("stores a message for an offline user and delivers it with a delay stamp at login", async () => {
    const a = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "pg");
    a.send("<message to='bob@localhost' type='chat' id='pg1'><body>stored in postgres</body></message>");
    for (let i = 0; i < 100 && (await server.storage.offline.count("bob@localhost")) === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.storage.driver, "postgres");
    assert.equal(await server.storage.offline.count("bob@localhost"), 1);
    const b = await rawSession(server.ports.c2sDirectTls!, "bob", "pw", "pg");
    b.send("<presence/>");
    await b.waitForElement((e) => e.is("message") && e.attrs.id === "pg1" && e.getChildText("body") === "stored in postgres" && !!e.getChild("delay", "urn:xmpp:delay"));
    a.close();
    b.close();
  });
});
