/** Offline rows and the client's answer to the server's ping (clients without stream management). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "../helpers/server.js";
import { rawSession } from "../helpers/raw.js";

describe("offline delivery without stream management", () => {
  it("rows are deleted when the client answers the ping that follows the flush, kept when it does not", async () => {
    const server = await startTestServer({ modules: { offline: { ackTimeoutSeconds: 1 } } });
    try {
      await server.accounts.create("drain@localhost", "pw");
      for (let i = 0; i < 3; i++) await server.storage.offline.append("drain@localhost", `<message xmlns="jabber:client" to="drain@localhost" id="m${i}"><body>x</body></message>`, Date.now(), 100);
      const silent = await rawSession(server.ports.c2sDirectTls!, "drain", "pw", "silent");
      silent.send("<presence/>");
      await silent.waitFor(/id="m2".*<ping xmlns="urn:xmpp:ping"\/>/s);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(await server.storage.offline.count("drain@localhost"), 3, "no answer: kept");
      silent.close();
      const c = await rawSession(server.ports.c2sDirectTls!, "drain", "pw", "r");
      c.send("<presence/>");
      const ping = await c.waitFor(/<iq type="get" from="localhost" to="drain@localhost\/r" id="([^"]+)"><ping/);
      c.send(`<iq type='result' id='${ping[1]}' to='localhost'/>`);
      for (let i = 0; i < 100 && (await server.storage.offline.count("drain@localhost")) > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(await server.storage.offline.count("drain@localhost"), 0);
      c.close();
    } finally {
      await server.cleanup();
    }
  });
});
