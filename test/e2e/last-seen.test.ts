/** "Last seen" privacy through a XEP-0050 command, and XEP-0012 answers that follow it. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const COMMANDS = "http://jabber.org/protocol/commands";
const NODE = "urn:parley:last-seen:0";

describe("last seen privacy (XEP-0012 + XEP-0050)", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob"]) await server.accounts.create(`${u}@localhost`, "pw");
    await server.storage.roster.put("alice@localhost", { jid: "bob@localhost", groups: [], subscription: "both", ask: false, approved: false });
    await server.storage.lastActivity.set("alice@localhost", { at: Date.now() - 60_000, status: "" });
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  const setVisibility = async (c: Connected, value: string) => {
    const started = await c.iq(xml("iq", { type: "set", to: "localhost" }, xml("command", { xmlns: COMMANDS, node: NODE, action: "execute" })));
    const command = started.getChild("command", COMMANDS)!;
    assert.equal(command.attrs.status, "executing");
    const field = command.getChild("x", "jabber:x:data")!.getChildren("field").find((f) => f.attrs.var === "visibility")!;
    assert.deepEqual(field.getChildren("option").map((o) => o.getChildText("value")), ["contacts", "nobody"]);
    const done = await c.iq(xml("iq", { type: "set", to: "localhost" }, xml("command", { xmlns: COMMANDS, node: NODE, sessionid: command.attrs.sessionid, action: "complete" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, NODE)),
        xml("field", { var: "visibility" }, xml("value", {}, value))))));
    assert.equal(done.getChild("command", COMMANDS)!.attrs.status, "completed");
    return command.attrs.sessionid as string;
  };
  const lastOf = (c: Connected) => c.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "jabber:iq:last" })));

  it("contacts see it by default; 'nobody' hides it; the command is listed and its sessions are single-use", async () => {
    const alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
    const bob = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "bob", password: "pw" });
    clients.push(alice, bob);
    const listed = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items", node: COMMANDS })));
    assert.ok(listed.getChild("query")!.getChildren("item").some((i) => i.attrs.node === NODE));

    const seen = await lastOf(bob);
    assert.ok(Number(seen.getChild("query")!.attrs.seconds) >= 59);
    const used = await setVisibility(alice, "nobody");
    await assert.rejects(lastOf(bob), (err: { condition?: string }) => err.condition === "forbidden");
    const own = await lastOf(alice);
    assert.ok(own.getChild("query"), "the user still sees their own");
    await assert.rejects(alice.iq(xml("iq", { type: "set", to: "localhost" }, xml("command", { xmlns: COMMANDS, node: NODE, sessionid: used, action: "complete" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" })))), (err: { condition?: string }) => err.condition === "bad-request");
    await setVisibility(alice, "contacts");
    assert.ok(await lastOf(bob));
  });
});
