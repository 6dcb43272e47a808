/**
 * A module handler that throws — synchronously or not — gets the stanza error RFC 6120 §8.3.3.8
 * gives (internal-server-error), is logged, and the stanza is acknowledged (XEP-0198 'h') only
 * after that answer: never a silent ack (issue 14, "the sync-throw hole").
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { z } from "zod";
import { capturingLogger, startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { defineModule } from "../../src/module.js";
import { defaultModules } from "../../src/modules/index.js";
import type { Element } from "@xmpp/xml";
import { Priority } from "../../src/hooks.js";

const thrower = defineModule({
  name: "thrower",
  implements: [],
  options: z.strictObject({}),
  start(ctx) {
    ctx.chain("message/bare", ({ stanza }) => {
      if (stanza.getChildText("body") === "sync") throw new Error("thrown synchronously");
      if (stanza.getChildText("body") === "async") return Promise.reject(new Error("rejected"));
      return undefined;
    }, Priority.FIRST);
    ctx.chain("iq/host", ({ stanza }) => {
      if (stanza.getChild("boom", "urn:example:boom")) throw new Error("thrown synchronously");
      return undefined;
    }, Priority.FIRST);
  },
});

const condition = (e: Element) => e.getChild("error")?.children.find((c) => typeof c !== "string" && c.name !== "text") as Element | undefined;

describe("a handler that throws", () => {
  let server: TestServer;
  let alice: RawClient;
  const { log, records } = capturingLogger();
  before(async () => {
    server = await startTestServer({}, { log, modules: [...defaultModules, thrower] });
    for (const u of ["alice", "bob"]) await server.accounts.create(`${u}@localhost`, "pw");
    alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "a");
    const from = alice.elements.length;
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>");
    await alice.waitForElement((e) => e.is("enabled", "urn:xmpp:sm:3"), 5000, from);
  });
  after(async () => {
    alice.close();
    await server.cleanup();
  });

  for (const [kind, stanza] of [
    ["message handler, synchronously", "<message to='bob@localhost' type='chat' id='m-sync'><body>sync</body></message>"],
    ["message handler, asynchronously", "<message to='bob@localhost' type='chat' id='m-async'><body>async</body></message>"],
    ["IQ chain handler, synchronously", "<iq to='localhost' type='get' id='iq-sync'><boom xmlns='urn:example:boom'/></iq>"],
  ] as const) {
    it(`${kind}: the sender gets internal-server-error before the stanza is acknowledged`, async () => {
      const id = /id='([^']+)'/.exec(stanza)![1]!;
      const from = alice.elements.length;
      const logged = records.length;
      alice.send(stanza + "<r xmlns='urn:xmpp:sm:3'/>");
      const ack = await alice.waitForElement((e) => e.is("a", "urn:xmpp:sm:3"), 5000, from);
      const answers = alice.elements.slice(from, alice.elements.indexOf(ack));
      const reply = answers.find((e) => e.attrs.id === id);
      assert.ok(reply, "the error reply came before the ack");
      assert.equal(reply.attrs.type, "error");
      assert.equal(condition(reply)?.name, "internal-server-error");
      assert.ok(records.slice(logged).some((r) => r.level === 50 && r.stage === "handler"), "the failure is logged");
    });
  }

  it("the stream keeps working", async () => {
    const from = alice.elements.length;
    alice.send("<iq to='localhost' type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
    const pong = await alice.waitForElement((e) => e.attrs.id === "ping1", 5000, from);
    assert.equal(pong.attrs.type, "result");
  });
});
