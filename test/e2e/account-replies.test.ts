/**
 * Replies to IQs a client sends without 'to' (its own account, RFC 6120 §10.3.3) come from the
 * account's bare JID, results and errors alike (RFC 6120 §8.1.2.1; XEP-0163 for PEP) — whichever
 * module answers, and when none does (issue 22.5).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const PUBSUB = "http://jabber.org/protocol/pubsub";

describe("replies to IQs addressed to the own account without 'to'", () => {
  let server: TestServer;
  let alice: Connected;
  before(async () => {
    server = await startTestServer();
    await server.accounts.create("alice@localhost", "pw");
    alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw", resource: "r" });
  });
  after(async () => {
    await alice?.stop();
    await server?.cleanup();
  });
  /** Sends an IQ without 'to' and returns the reply as received (result or error). */
  const ask = async (id: string, type: "get" | "set", payload: ReturnType<typeof xml>) => {
    await alice.iq(xml("iq", { type, id }, payload)).catch(() => undefined);
    return alice.waitFor((s) => s.name === "iq" && s.attrs.id === id);
  };
  const cases: Array<[string, "get" | "set", ReturnType<typeof xml>, "result" | "error"]> = [
    ["pubsub items of a missing node", "get", xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: "urn:example:nothing" })), "error"],
    ["pubsub publish without a node", "set", xml("pubsub", { xmlns: PUBSUB }, xml("publish", {}, xml("item", {}, xml("x", { xmlns: "urn:example" })))), "error"],
    ["pubsub publish", "set", xml("pubsub", { xmlns: PUBSUB }, xml("publish", { node: "urn:example:n" }, xml("item", { id: "1" }, xml("x", { xmlns: "urn:example" })))), "result"],
    ["vCard set with a wrong element", "set", xml("notvcard", { xmlns: "vcard-temp" }), "error"],
    ["vCard get", "get", xml("vCard", { xmlns: "vcard-temp" }), "result"],
    ["roster set with two items", "set", xml("query", { xmlns: "jabber:iq:roster" }, xml("item", { jid: "a@localhost" }), xml("item", { jid: "b@localhost" })), "error"],
    ["private XML in a reserved namespace", "get", xml("query", { xmlns: "jabber:iq:private" }, xml("x", { xmlns: "jabber:client" })), "error"],
    ["a namespace nobody serves", "get", xml("query", { xmlns: "urn:example:unknown" }), "error"],
  ];
  for (const [what, type, payload, expected] of cases) {
    it(`${what}: ${expected === "error" ? "an error" : "a result"} from alice@localhost`, async () => {
      const reply = await ask(what.replace(/\W+/g, "-"), type, payload);
      assert.equal(reply.attrs.type, expected);
      assert.equal(reply.attrs.from, "alice@localhost");
      assert.equal(reply.attrs.to, "alice@localhost/r");
    });
  }
});
