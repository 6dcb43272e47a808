/**
 * XEP-0012 Last Activity, as a module unit test: the modules run in-process (src/module-harness.ts),
 * sessions are plain objects, nothing listens on a socket. docs/MODULES.md walks through it.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHarness, type ModuleHarness, type HarnessSession } from "../../src/module-harness.js";
import { last } from "../../src/modules/last.js";
import { presence } from "../../src/modules/presence.js";
import { roster } from "../../src/modules/roster.js";
import { adhoc } from "../../src/modules/adhoc.js";
import { disco } from "../../src/modules/disco.js";
import type { Element } from "../../src/xmpp/xml.js";

const NS_LAST = "jabber:iq:last";
const conditionOf = (reply: Element) => reply.getChild("error")?.children.find((c): c is Element => typeof c !== "string" && c.name !== "text")?.name;

describe("last activity (XEP-0012)", () => {
  let h: ModuleHarness;
  // Only what `last` depends on: the harness starts what it is given, in dependency order.
  before(async () => { h = await startHarness({ modules: [last, presence, roster, adhoc, disco] }); });
  after(() => h.stop());

  const ask = async (from: HarnessSession, to: string, id: string) => {
    await h.send(from, `<iq type='get' id='${id}' to='${to}'><query xmlns='${NS_LAST}'/></iq>`);
    return from.next((s) => s.name === "iq" && s.attrs.id === id);
  };

  it("the server answers with its uptime", async () => {
    const alice = await h.connect("alice@localhost/a");
    const reply = await ask(alice, "localhost", "up");
    assert.equal(reply.attrs.type, "result");
    assert.ok(Number(reply.getChild("query", NS_LAST)?.attrs.seconds) >= 0);
  });

  it("an account's last activity is for those with a subscription to it (§4: otherwise forbidden)", async () => {
    await h.accounts.create("bob@localhost", "pw");
    const stranger = await h.connect("mallory@localhost/m");
    assert.equal(conditionOf(await ask(stranger, "bob@localhost", "no-sub")), "forbidden");
    // An account that does not exist is not told apart from one that says nothing (RFC 6121 §8.5.1).
    assert.equal(conditionOf(await ask(stranger, "nobody@localhost", "no-account")), "service-unavailable");
  });

  it("0 while the user is online; after the last resource leaves, the time since and its status", async () => {
    const carol = await h.connect("carol@localhost/c");
    const dave = await h.connect("dave@localhost/d");
    await h.send(carol, "<presence type='subscribe' to='dave@localhost'/>");
    await h.send(dave, "<presence type='subscribed' to='carol@localhost'/>");
    const online = await ask(carol, "dave@localhost", "online");
    assert.equal(online.getChild("query", NS_LAST)?.attrs.seconds, "0");
    await h.send(dave, "<presence type='unavailable'><status>gone fishing</status></presence>");
    await h.disconnect(dave);
    const gone = await ask(carol, "dave@localhost", "gone");
    assert.equal(gone.attrs.type, "result");
    assert.equal(gone.getChild("query", NS_LAST)?.text(), "gone fishing");
  });
});
