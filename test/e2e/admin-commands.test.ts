/**
 * XEP-0133 service administration over XEP-0050 ad-hoc commands, end to end with xmpp.js: an
 * admin from the config runs each command as Gajim or Psi would (execute → form → submit), and a
 * user who is not an admin is refused every one of them with forbidden.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import type { Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { openStream, scramLogin, saslConditions } from "../helpers/raw.js";

const COMMANDS = "http://jabber.org/protocol/commands";
const ADMIN = "http://jabber.org/protocol/admin";
const NODES = ["add-user", "delete-user", "disable-user", "reenable-user", "end-user-session", "change-user-password", "get-online-users-list", "get-online-users", "announce"];

const execute = (c: Connected, node: string) => c.iq(xml("iq", { type: "set", to: "localhost" },
  xml("command", { xmlns: COMMANDS, node: `${ADMIN}#${node}`, action: "execute" }))).then((r) => r.getChild("command", COMMANDS)!);

/** Runs a command to completion with these field values; returns the completed <command/>. */
async function run(c: Connected, node: string, fields: Record<string, string | string[]>): Promise<Element> {
  const started = await execute(c, node);
  assert.equal(started.attrs.status, "executing");
  const form = started.getChild("x", "jabber:x:data")!;
  assert.equal(form.attrs.type, "form");
  const formType = form.getChildren("field").find((f) => f.attrs.var === "FORM_TYPE")!.getChildText("value");
  assert.equal(formType, ADMIN);
  // The fields the XEP names are in the form the client shows.
  const offered = new Set(form.getChildren("field").map((f) => f.attrs.var));
  for (const name of Object.keys(fields)) assert.ok(offered.has(name), `the form offers '${name}'`);
  const reply = await c.iq(xml("iq", { type: "set", to: "localhost" },
    xml("command", { xmlns: COMMANDS, node: `${ADMIN}#${node}`, sessionid: started.attrs.sessionid, action: "complete" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, ADMIN)),
        ...Object.entries(fields).map(([name, v]) => xml("field", { var: name }, ...(Array.isArray(v) ? v : [v]).map((x) => xml("value", {}, x))))))));
  const done = reply.getChild("command", COMMANDS)!;
  assert.equal(done.attrs.status, "completed");
  return done;
}


/** The XMPP error condition of a failed request (xmpp.js rejects with a StanzaError). */
async function condition(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { condition: string }).condition;
  }
  return "none";
}

describe("XEP-0133 service administration", () => {
  let server: TestServer;
  let admin: Connected;
  let mallory: Connected;
  const clients: Connected[] = [];
  const login = async (user: string, password = "pw", resource = "r") => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password, resource });
    clients.push(c);
    return c;
  };
  /** A SCRAM login over a raw stream; the failure conditions, [] on success. */
  const saslFailure = async (user: string, password: string) => {
    const c = await openStream(server.ports.c2sDirectTls!);
    try {
      const r = await scramLogin(c, "SCRAM-SHA-256", user, password);
      return r === "success" ? [] : typeof r === "string" ? [r] : saslConditions(r);
    } finally {
      c.close();
    }
  };
  /** Resolves with the stream error condition when the server ends this client's stream. */
  const streamErrorOf = (c: Connected) => new Promise<{ condition: string; text?: string }>((resolve) => {
    c.xmpp.on("error", (err: { condition?: string; text?: string; name?: string }) => { if (err.name === "StreamError") resolve({ condition: err.condition!, ...(err.text ? { text: err.text } : {}) }); });
  });

  before(async () => {
    server = await startTestServer({ admins: ["Boss@LOCALHOST"] });
    for (const u of ["boss", "mallory", "alice", "bob", "carol"]) await server.accounts.create(`${u}@localhost`, "pw");
    admin = await login("boss");
    mallory = await login("mallory");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  it("lists the admin commands to the admin only", async () => {
    const items = async (c: Connected) => (await c.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items", node: COMMANDS }))))
      .getChild("query")!.getChildren("item").map((i) => i.attrs.node as string);
    const forAdmin = await items(admin);
    for (const n of NODES) assert.ok(forAdmin.includes(`${ADMIN}#${n}`), `${n} listed`);
    const forUser = await items(mallory);
    assert.deepEqual(forUser.filter((n) => n.startsWith(ADMIN)), []);
    assert.ok(forUser.length > 0, "users still see their own commands");
  });

  it("refuses every admin command to a non-admin with forbidden, at execute and at submit", async () => {
    for (const node of NODES) assert.equal(await condition(execute(mallory, node)), "forbidden", node);
    // A submission with a session id (from anywhere) is refused too, before the session is looked at.
    const submit = mallory.iq(xml("iq", { type: "set", to: "localhost" },
      xml("command", { xmlns: COMMANDS, node: `${ADMIN}#add-user`, sessionid: "guessed", action: "complete" },
        xml("x", { xmlns: "jabber:x:data", type: "submit" }, xml("field", { var: "accountjid" }, xml("value", {}, "evil@localhost")),
          xml("field", { var: "password" }, xml("value", {}, "x"))))));
    assert.equal(await condition(submit), "forbidden");
    assert.equal(await server.storage.accounts.exists("evil@localhost"), false);
  });

  it("add-user creates an account that can log in; an existing one is a conflict; mismatched passwords are refused", async () => {
    await run(admin, "add-user", { accountjid: "newbie@localhost", password: "fresh-pw", "password-verify": "fresh-pw" });
    const newbie = await login("newbie", "fresh-pw");
    assert.equal(newbie.jid, "newbie@localhost/r");
    assert.equal(await condition(run(admin, "add-user", { accountjid: "newbie@localhost", password: "x", "password-verify": "x" })), "conflict");
    assert.equal(await condition(run(admin, "add-user", { accountjid: "other@localhost", password: "a", "password-verify": "b" })), "not-acceptable");
    assert.equal(await condition(run(admin, "add-user", { accountjid: "x@elsewhere.example", password: "a" })), "not-allowed");
  });

  it("change-user-password: the old password stops working, the new one works", async () => {
    await run(admin, "change-user-password", { accountjid: "carol@localhost", password: "carol-new" });
    assert.deepEqual(await saslFailure("carol", "pw"), ["not-authorized"]);
    await login("carol", "carol-new");
  });

  it("get-online-users-list and get-online-users return the online bare JIDs in a result form", async () => {
    const bob = await login("bob", "pw", "phone");
    await login("bob", "pw", "laptop");
    for (const node of ["get-online-users-list", "get-online-users"]) {
      const done = await run(admin, node, { max_items: "100" });
      const result = done.getChild("x", "jabber:x:data")!;
      assert.equal(result.attrs.type, "result");
      const users = result.getChildren("field").find((f) => f.attrs.var === "onlineuserjids")!.getChildren("value").map((v) => v.text());
      assert.ok(users.includes("bob@localhost") && users.includes("boss@localhost") && users.includes("mallory@localhost"), users.join());
      assert.equal(users.filter((u) => u === "bob@localhost").length, 1, "one entry per user, not per resource");
    }
    await bob.stop();
  });

  it("announce reaches every online session as a headline", async () => {
    const alice = await login("alice");
    await run(admin, "announce", { subject: "Maintenance", announcement: ["Going down at 22:00.", "Back soon."] });
    for (const c of [alice, mallory]) {
      const m = await c.waitFor((s) => s.name === "message" && s.attrs.type === "headline");
      assert.equal(m.attrs.from, "localhost");
      assert.equal(m.getChildText("subject"), "Maintenance");
      assert.equal(m.getChildText("body"), "Going down at 22:00.\nBack soon.");
    }
  });

  it("end-user-session ends one resource (full JID) or all of them (bare JID); the user may log in again", async () => {
    const one = await login("alice", "pw", "one");
    const two = await login("alice", "pw", "two");
    const oneEnded = streamErrorOf(one);
    await run(admin, "end-user-session", { accountjids: ["alice@localhost/one"] });
    assert.equal((await oneEnded).condition, "policy-violation");
    assert.deepEqual(server.sessions.ofUser("alice@localhost").map((s) => s.jid.resource).sort(), ["r", "two"]);
    const twoEnded = streamErrorOf(two);
    await run(admin, "end-user-session", { accountjids: ["alice@localhost"] });
    assert.equal((await twoEnded).condition, "policy-violation");
    assert.equal(server.sessions.ofUser("alice@localhost").length, 0);
    await login("alice", "pw", "again");
  });

  it("disable-user ends the sessions and refuses logins with account-disabled (RFC 6120 §6.5.1); reenable-user lets them in again", async () => {
    const bob = await login("bob", "pw", "d");
    const ended = streamErrorOf(bob);
    await run(admin, "disable-user", { accountjids: ["bob@localhost"] });
    const error = await ended;
    assert.equal(error.condition, "not-authorized");
    assert.equal(error.text, "Account disabled");
    // SCRAM and PLAIN: account-disabled only once the password proved right.
    assert.deepEqual(await saslFailure("bob", "pw"), ["account-disabled"]);
    assert.deepEqual(await saslFailure("bob", "wrong"), ["not-authorized"], "a wrong password learns nothing about the account");
    const p = await openStream(server.ports.c2sDirectTls!);
    const mark = p.elements.length;
    p.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from("\0bob\0pw").toString("base64")}</auth>`);
    const failure = await p.waitForElement((e) => e.is("failure", "urn:ietf:params:xml:ns:xmpp-sasl"), 5000, mark);
    assert.deepEqual(failure.children.map((e) => (e as { name: string }).name), ["account-disabled", "text"]);
    p.close();
    assert.equal((await server.storage.roster.get("bob@localhost")).version >= 0, true);
    assert.equal(await server.storage.accounts.exists("bob@localhost"), true, "data kept");
    await run(admin, "reenable-user", { accountjids: ["bob@localhost"] });
    await login("bob", "pw", "back");
  });

  it("delete-user removes the account and ends its sessions; an unknown JID changes nothing", async () => {
    const carol = await login("carol", "carol-new", "x");
    const ended = streamErrorOf(carol);
    assert.equal(await condition(run(admin, "delete-user", { accountjids: ["carol@localhost", "ghost@localhost"] })), "item-not-found");
    assert.equal(await server.storage.accounts.exists("carol@localhost"), true, "nothing deleted when one JID is unknown");
    await run(admin, "delete-user", { accountjids: ["carol@localhost"] });
    assert.equal((await ended).condition, "not-authorized");
    assert.equal(await server.storage.accounts.exists("carol@localhost"), false);
    assert.deepEqual(await saslFailure("carol", "carol-new"), ["not-authorized"]);
  });
});
