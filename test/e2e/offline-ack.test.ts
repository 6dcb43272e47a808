/** Offline rows and the client's answer to the server's ping (clients without stream management). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { startTestServer } from "../helpers/server.js";
import type { Element } from "@xmpp/xml";
import { rawSession } from "../helpers/raw.js";

const isPing = (to: string) => (e: Element) =>
  e.is("iq") && e.attrs.type === "get" && e.attrs.from === "localhost" && e.attrs.to === to && !!e.getChild("ping", "urn:xmpp:ping");

describe("offline delivery without stream management", () => {
  it("rows are deleted when the client answers the ping that follows the flush, kept when it does not", async () => {
    const server = await startTestServer({ modules: { offline: { ackTimeoutSeconds: 1 } } });
    try {
      await server.accounts.create("drain@localhost", "pw");
      for (let i = 0; i < 3; i++) await server.storage.offline.append("drain@localhost", `<message xmlns="jabber:client" to="drain@localhost" id="m${i}"><body>x</body></message>`, Date.now(), 100);
      const silent = await rawSession(server.ports.c2sDirectTls!, "drain", "pw", "silent");
      silent.send("<presence/>");
      const last = await silent.waitForElement((e) => e.is("message") && e.attrs.id === "m2");
      await silent.waitForElement(isPing("drain@localhost/silent"), 5000, silent.elements.indexOf(last) + 1);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(await server.storage.offline.count("drain@localhost"), 3, "no answer: kept");
      silent.close();
      const c = await rawSession(server.ports.c2sDirectTls!, "drain", "pw", "r");
      c.send("<presence/>");
      const ping = await c.waitForElement(isPing("drain@localhost/r"));
      c.send(`<iq type='result' id='${ping.attrs.id}' to='localhost'/>`);
      for (let i = 0; i < 100 && (await server.storage.offline.count("drain@localhost")) > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(await server.storage.offline.count("drain@localhost"), 0);
      c.close();
    } finally {
      await server.cleanup();
    }
  });
});
