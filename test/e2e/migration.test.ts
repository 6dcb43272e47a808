/**
 * `parley import` / `parley export` (XEP-0227 1.1): real exports of ejabberd 23.01 and Prosody
 * 0.12.3 (test/fixtures/xep0227, see its README for how they were made) imported into a fresh
 * Parley whose accounts then log in over real sockets and find their data; a round trip
 * Parley → file → Parley; and hostile files refused with the line or element named and storage
 * left as it was.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, createWriteStream } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import { RawClient, header, scramLogin } from "../helpers/raw.js";
import type { Element } from "@xmpp/xml";
import { importPie, type ImportOptions } from "../../src/migration/import.js";
import { exportPie } from "../../src/migration/export.js";
import { ImportError } from "../../src/migration/reader.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";
import { populate, USERS, EXPECTED } from "../helpers/migration-data.js";
import type { Storage } from "../../src/storage/index.js";

const FIXTURES = join(import.meta.dirname, "../fixtures/xep0227");
const options = (hosts: string[], extra: Partial<ImportOptions> = {}): ImportOptions => ({ hosts, mucServices: hosts.map((h) => `conference.${h}`), iterations: 4096, skipUnknown: false, maxPepItems: 256, ...extra });
/** XML compared as parsed trees: attribute order and quoting are not data. */
const canon = (xml: string): unknown => {
  const walk = (e: ReturnType<typeof parseElement>): unknown => [e.name, Object.entries(e.attrs).sort(), e.children.map((c) => (typeof c === "string" ? c : walk(c)))];
  return xml === "" ? "" : walk(parseElement(xml));
};
const rosterOf = async (c: Awaited<ReturnType<typeof connect>>) =>
  (await c.iq(xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:roster" })))).getChild("query")!.getChildren("item");

/** "success", or the condition of the SASL failure. */
async function rawScram(port: number, domain: string, mechanism: string, user: string, password: string): Promise<string> {
  const c = await RawClient.open(port, true);
  c.send(header(domain));
  await c.waitFor(/<\/stream:features>/);
  try {
    const outcome = await scramLogin(c, mechanism, user, password);
    return typeof outcome === "string" ? outcome : outcome.children.find((e): e is Element => typeof e !== "string")?.name ?? "failure";
  } finally {
    c.socket.destroy();
  }
}

describe("import: ejabberd 23.01 export_piefxis (main file + XIncluded host file)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ hosts: ["ejabberd.test"] });
    const report = await importPie(server.storage, [join(FIXTURES, "ejabberd-23.01/20261201-225847.xml")], options(["ejabberd.test"]));
    assert.deepEqual({ users: report.users, offline: report.offlineMessages }, { users: 3, offline: 1 });
  });
  after(() => server?.cleanup());

  it("alice logs in with SCRAM-SHA-1 and sees her contacts, groups, pending request, vCard and private XML", async () => {
    const alice = await connect({ port: server.ports.c2s!, domain: "ejabberd.test", username: "alice", password: USERS.alice, mechanism: "SCRAM-SHA-1" });
    try {
      const items = await rosterOf(alice);
      const bob = items.find((i) => i.attrs.jid === "bob@ejabberd.test")!;
      assert.equal(bob.attrs.subscription, "both");
      assert.equal(bob.attrs.name, "Bob");
      assert.deepEqual(bob.getChildren("group").map((g) => g.text()).sort(), ["Friends", "Work"]);
      const carol = items.find((i) => i.attrs.jid === "carol@ejabberd.test")!;
      assert.deepEqual([carol.attrs.subscription, carol.attrs.ask], ["none", "subscribe"]);
      const vcard = await alice.iq(xml("iq", { type: "get" }, xml("vCard", { xmlns: "vcard-temp" })));
      assert.equal(vcard.getChild("vCard")!.getChildText("FN"), EXPECTED.vcardFn);
      const priv = await alice.iq(xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:private" }, xml("prefs", { xmlns: "urn:example:parley-migration" }))));
      assert.equal(priv.getChild("query")!.getChild("prefs")!.getChildText("color"), EXPECTED.privateColor);
    } finally {
      await alice.stop();
    }
  });

  it("carol logs in with PLAIN and receives the offline message, without ejabberd's archive ids", async () => {
    const carol = await connect({ port: server.ports.c2s!, domain: "ejabberd.test", username: "carol", password: USERS.carol, mechanism: "PLAIN" });
    try {
      await carol.xmpp.send(xml("presence"));
      const m = await carol.waitFor((s) => s.is("message") && s.getChildText("body") === EXPECTED.offlineBody);
      assert.equal(m.attrs.from, "alice@ejabberd.test/migrate");
      assert.equal(m.getChild("delay", "urn:xmpp:delay")!.attrs.stamp, "2026-12-01T22:58:39.479585Z");
      assert.equal(m.getChildren("stanza-id", "urn:xmpp:sid:0").filter((s) => s.attrs.id === "1796165919475106").length, 0);
    } finally {
      await carol.stop();
    }
  });

  it("a password account gets SCRAM-SHA-256 too, and the pending request reached carol's storage", async () => {
    assert.equal(await rawScram(server.ports.c2sDirectTls!, "ejabberd.test", "SCRAM-SHA-256", "bob", USERS.bob), "success");
    const pending = await server.storage.subscriptionRequests.list("carol@ejabberd.test");
    assert.deepEqual(pending.map((p) => p.contact), ["alice@ejabberd.test"]);
    assert.equal(parseElement(pending[0]!.stanza).attrs.type, "subscribe");
  });

  it("importing the same file again is refused before anything is written", async () => {
    await assert.rejects(importPie(server.storage, [join(FIXTURES, "ejabberd-23.01/20261201-225847.xml")], options(["ejabberd.test"])),
      (e: unknown) => e instanceof ImportError && /alice@ejabberd.test exists already/.test(e.message));
  });
});

describe("import: Prosody 0.12.3 prosody-migrator (one file per user)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ hosts: ["prosody.test"] });
    const files = ["alice", "bob", "carol"].map((u) => join(FIXTURES, `prosody-0.12.3/${u}@prosody.test.xml`));
    files.push(...["dave", "erin"].map((u) => join(FIXTURES, `prosody-0.12.3-hashed/${u}@prosody.test.xml`)));
    const report = await importPie(server.storage, files, options(["prosody.test"]));
    assert.equal(report.users, 5);
    assert.ok(report.skipped.some((s) => /PEP affiliations/.test(s)), "Prosody's PEP affiliations are reported as skipped");
  });
  after(() => server?.cleanup());

  it("alice's PEP nodes came over: OMEMO device list and bundle, bookmarks with their access model, avatar", async () => {
    const alice = await connect({ port: server.ports.c2s!, domain: "prosody.test", username: "alice", password: USERS.alice });
    try {
      const items = async (node: string) => (await alice.iq(xml("iq", { type: "get" }, xml("pubsub", { xmlns: "http://jabber.org/protocol/pubsub" }, xml("items", { node })))))
        .getChild("pubsub")!.getChild("items")!.getChildren("item");
      const devices = await items("eu.siacs.conversations.axolotl.devicelist");
      assert.equal(devices[0]!.getChild("list", "eu.siacs.conversations.axolotl")!.getChild("device")!.attrs.id, EXPECTED.omemoDevice);
      const bundle = await items(`eu.siacs.conversations.axolotl.bundles:${EXPECTED.omemoDevice}`);
      assert.equal(bundle[0]!.getChild("bundle")!.getChild("prekeys")!.getChild("preKeyPublic")!.attrs.preKeyId, "1");
      const bookmarks = await items("urn:xmpp:bookmarks:1");
      assert.equal(bookmarks[0]!.attrs.id, EXPECTED.bookmarkRoom("prosody.test"));
      assert.equal(bookmarks[0]!.getChild("conference", "urn:xmpp:bookmarks:1")!.attrs.autojoin, "true");
      const config = JSON.parse((await server.storage.pubsub.getConfig("alice@prosody.test", "urn:xmpp:bookmarks:1"))!);
      assert.deepEqual([config.access_model, config.persist_items, config.max_items], ["whitelist", true, 256]);
      const avatar = await items("urn:xmpp:avatar:data");
      assert.equal(avatar[0]!.getChildText("data"), "iVBORw0KGgo=");
      const roster = await rosterOf(alice);
      assert.equal(roster.find((i) => i.attrs.jid === "bob@prosody.test")!.attrs.subscription, "both");
    } finally {
      await alice.stop();
    }
  });

  it("Prosody's namespace-less pending <presence type='subscribe'/> becomes carol's pending request", async () => {
    assert.deepEqual((await server.storage.subscriptionRequests.list("carol@prosody.test")).map((p) => p.contact), ["alice@prosody.test"]);
  });

  it("dave (SCRAM-SHA-1 keys only): SCRAM-SHA-1 works, SCRAM-SHA-256 cannot until a PLAIN login derives its keys", async () => {
    const port = server.ports.c2sDirectTls!;
    const before = await server.storage.accounts.get("dave@prosody.test");
    assert.deepEqual(Object.keys(before!.credentials), ["SHA-1"]);
    assert.equal(before!.credentials["SHA-1"]!.iterations, 10000);
    const dave = await connect({ port: server.ports.c2s!, domain: "prosody.test", username: "dave", password: "dave-pass-4", mechanism: "SCRAM-SHA-1" });
    const roster = await rosterOf(dave);
    await dave.stop();
    assert.deepEqual(roster.map((i) => [i.attrs.jid, i.attrs.name, i.getChildText("group")]), [["erin@prosody.test", "Erin", "Old friends"]]);
    assert.equal(await rawScram(port, "prosody.test", "SCRAM-SHA-256", "dave", "dave-pass-4"), "not-authorized");
    const plain = await connect({ port: server.ports.c2s!, domain: "prosody.test", username: "dave", password: "dave-pass-4", mechanism: "PLAIN" });
    await plain.stop();
    const upgraded = await server.storage.accounts.get("dave@prosody.test");
    assert.deepEqual(upgraded!.credentials["SHA-1"], before!.credentials["SHA-1"]);
    assert.equal(upgraded!.credentials["SHA-256"]!.iterations, 10000);
    assert.equal(await rawScram(port, "prosody.test", "SCRAM-SHA-256", "dave", "dave-pass-4"), "success");
    assert.equal(await rawScram(port, "prosody.test", "SCRAM-SHA-1", "erin", "wrong"), "not-authorized");
  });
});

describe("round trip: Parley → XEP-0227 file → fresh Parley", () => {
  let a: TestServer, b: TestServer, dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "parley-export-"));
    a = await startTestServer();
    b = await startTestServer();
    for (const [u, p] of Object.entries(USERS)) await a.accounts.create(`${u}@localhost`, p);
    await populate(a.ports.c2s!, "localhost");
    // A persistent room with a member, made the XEP-0045 way (§10.1.3 configuration, §9.3 affiliation).
    const alice = await connect({ port: a.ports.c2s!, username: "alice", password: USERS.alice, resource: "room" });
    try {
      const room = "team@conference.localhost";
      await alice.xmpp.send(xml("presence", { to: `${room}/alice` }, xml("x", { xmlns: "http://jabber.org/protocol/muc" })));
      await alice.waitFor((st) => st.is("presence") && st.attrs.from === `${room}/alice`);
      await alice.iq(xml("iq", { type: "set", to: room }, xml("query", { xmlns: "http://jabber.org/protocol/muc#owner" },
        xml("x", { xmlns: "jabber:x:data", type: "submit" },
          xml("field", { var: "FORM_TYPE" }, xml("value", {}, "http://jabber.org/protocol/muc#roomconfig")),
          xml("field", { var: "muc#roomconfig_roomname" }, xml("value", {}, "The Team")),
          xml("field", { var: "muc#roomconfig_persistentroom" }, xml("value", {}, "1")),
          xml("field", { var: "muc#roomconfig_membersonly" }, xml("value", {}, "1"))))));
      await alice.iq(xml("iq", { type: "set", to: room }, xml("query", { xmlns: "http://jabber.org/protocol/muc#admin" },
        xml("item", { jid: "bob@localhost", affiliation: "member", nick: "bobby" }))));
    } finally {
      await alice.stop();
    }
  });
  after(async () => {
    await a?.cleanup();
    await b?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the file holds SCRAM keys (no password), the roster and PEP; the import reproduces storage", async () => {
    const file = join(dir, "parley.xml");
    await a.storage.accounts.setDisabled("bob@localhost", true); // a disabled account stays disabled
    assert.deepEqual(await exportPie(a.storage, ["localhost"], file, (h) => `conference.${h}`), { users: 3, rooms: 1 });
    const doc = parseElement(readFileSync(file, "utf8").replace(/^<\?xml[^>]*\?>/, ""));
    assert.equal(doc.name, "server-data");
    const alice = doc.getChild("host")!.getChildren("user").find((u) => u.attrs.name === "alice")!;
    assert.equal(alice.attrs.password, undefined);
    assert.deepEqual(alice.getChildren("scram-credentials", "urn:xmpp:pie:0#scram").map((s) => s.attrs.mechanism), ["SCRAM-SHA-1", "SCRAM-SHA-256"]);
    assert.equal(alice.getChild("query", "jabber:iq:roster")!.getChildren("item").length, 2);
    assert.ok(alice.getChild("pubsub", "http://jabber.org/protocol/pubsub#owner")!.getChildren("configure").some((c) => c.attrs.node === "urn:xmpp:bookmarks:1"));

    await importPie(b.storage, [file], options(["localhost"]));
    const snapshot = async (s: Storage) => {
      const out: Record<string, unknown> = {};
      for (const jid of await s.accounts.list("localhost")) {
        const nodes: Record<string, unknown> = {};
        for (const n of await s.pubsub.nodes(jid)) nodes[n] = { config: JSON.parse((await s.pubsub.getConfig(jid, n))!), items: (await s.pubsub.items(jid, n)).map((i) => [i.id, canon(i.payload)]) };
        out[jid] = {
          credentials: (await s.accounts.get(jid))!.credentials,
          disabled: (await s.accounts.get(jid))!.disabled,
          roster: (await s.roster.get(jid)).items.sort((x, y) => x.jid.localeCompare(y.jid)),
          // The stored request keeps what a pending request is: from, to, type (not the old stanza's id).
          pending: (await s.subscriptionRequests.list(jid)).map((r) => { const e = parseElement(r.stanza); return [r.contact, e.attrs.from, e.attrs.to, e.attrs.type]; }),
          vcard: canon((await s.documents.get(jid, "vcard-temp")) ?? ""),
          private: await Promise.all((await s.documents.keys(jid, "private:")).map(async (k) => [k, canon((await s.documents.get(jid, k))!)])),
          offline: (await s.offline.list(jid)).map((m) => parseElement(m.stanza).getChildText("body")),
          nodes,
        };
      }
      return out;
    };
    const rooms = async (s: Storage) => Promise.all((await s.rooms.list("conference.localhost")).map(async (r) => ({
      ...r, config: JSON.parse(r.config), affiliations: (await s.rooms.affiliations(r.jid)).sort((x, y) => x.jid.localeCompare(y.jid)),
    })));
    const snapshotRooms = await rooms(a.storage);
    assert.equal(snapshotRooms[0]?.config.name, "The Team");
    assert.deepEqual(await rooms(b.storage), snapshotRooms);
    const [before, after] = [await snapshot(a.storage), await snapshot(b.storage)];
    assert.deepEqual(after, before);
    assert.deepEqual((before["carol@localhost"] as { offline: string[] }).offline, [EXPECTED.offlineBody]);
    assert.equal((after["bob@localhost"] as { disabled: boolean }).disabled, true);
    // The same password works on the new server: the keys came over as they were.
    const carol = await connect({ port: b.ports.c2s!, username: "carol", password: USERS.carol });
    await carol.stop();
  });
});

describe("hostile and broken files are refused, naming the line or element, and nothing is written", () => {
  let server: TestServer, dir: string;
  const good = (users: string) => `<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='localhost'>\n${users}</host>\n</server-data>\n`;
  const ok = `<user name='first' password='secret-1'><query xmlns='jabber:iq:roster'><item jid='x@localhost' subscription='both'/></query></user>\n`;
  before(async () => {
    server = await startTestServer();
    dir = mkdtempSync(join(tmpdir(), "parley-hostile-"));
  });
  after(async () => {
    await server?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const refused = async (name: string, content: string | (() => Promise<void>), pattern: RegExp, extra: Partial<ImportOptions> = {}) => {
    const file = join(dir, name);
    if (typeof content === "string") writeFileSync(file, content);
    else await content();
    await assert.rejects(importPie(server.storage, [file], options(["localhost"], extra)), (e: unknown) => {
      assert.ok(e instanceof ImportError, String(e));
      assert.match(e.message, pattern);
      return true;
    });
    assert.deepEqual(await server.storage.accounts.list(), [], "no account was written");
    assert.deepEqual((await server.storage.roster.get("first@localhost")).items, []);
    assert.deepEqual(await server.storage.rooms.list("conference.localhost"), []);
  };

  it("a DOCTYPE with entities (billion laughs) at its line", () =>
    refused("doctype.xml", `<?xml version='1.0'?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>\n<server-data xmlns='urn:xmpp:pie:0'><host jid='localhost'><user name='a' password='p'>&lol2;</user></host></server-data>`,
      /doctype\.xml:2.*DOCTYPE is not allowed/));

  it("an undeclared entity", () => refused("entity.xml", good(`<user name='a' password='p'><vCard xmlns='vcard-temp'><FN>&xxe;</FN></vCard></user>\n`), /entity\.xml:4.*not well-formed/));

  it("a 50 MB element is stopped at the limit, not read whole", async () => {
    const file = join(dir, "huge.xml");
    await refused("huge.xml", async () => {
      const out = createWriteStream(file);
      out.write(good(ok).split("</host>")[0]!);
      out.write("<user name='big' password='p'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>");
      const chunk = "A".repeat(1024 * 1024);
      for (let i = 0; i < 50; i++) out.write(chunk);
      out.write("</BINVAL></PHOTO></vCard></user></host></server-data>");
      await new Promise<void>((r) => out.end(r));
    }, /huge\.xml:\d+ <user name='big'>: element larger than 4194304 characters/, { limits: { maxElementChars: 4 * 1024 * 1024, maxDepth: 32, maxAttributes: 64, maxNameLength: 1024, maxFiles: 10 } });
  });

  it("an unknown namespace inside a user (and --skip-unknown imports without it, reporting it)", async () => {
    const content = good(ok + `<user name='second' password='p'>\n<query xmlns='jabber:iq:roster'/>\n<secret xmlns='urn:example:unknown'/>\n</user>\n`);
    await refused("unknown.xml", content, /unknown\.xml:7 <secret xmlns='urn:example:unknown'>.*unknown namespace/);
    const report = await importPie(server.storage, [join(dir, "unknown.xml")], options(["localhost"], { skipUnknown: true }));
    assert.equal(report.users, 2);
    assert.match(report.skipped.join("\n"), /unknown\.xml:7 <secret/);
    for (const jid of await server.storage.accounts.list()) await server.storage.accounts.delete(jid);
  });

  it("an unknown element inside a roster", () =>
    refused("roster.xml", good(`<user name='a' password='p'><query xmlns='jabber:iq:roster'><item jid='b@localhost'><tag xmlns='urn:x'/></item></query></user>\n`), /roster\.xml:4 <tag xmlns='urn:x'>/));

  it("a bad JID in a roster item, after a good user: the good one is not written either", () =>
    refused("badjid.xml", good(ok + `<user name='second' password='p'>\n<query xmlns='jabber:iq:roster'><item jid='a@b@c' subscription='both'/></query></user>\n`),
      /badjid\.xml:6 <item jid='a@b@c'>: roster item jid 'a@b@c' is not a valid JID/));

  it("a host this server does not serve", () => refused("host.xml", good(ok).replace("jid='localhost'", "jid='elsewhere.example'"), /host\.xml:3: <host jid='elsewhere.example'>: not a host of this server/));

  it("a truncated file", () => refused("truncated.xml", good(ok + ok.replace("first", "second")).slice(0, -60), /truncated\.xml:\d+.*(truncated|not well-formed)/));

  it("an XInclude that leaves the directory", () =>
    refused("include.xml", `<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>\n<xi:include href='../../etc/passwd'/>\n</server-data>`, /include\.xml:2.*points outside/));

  it("a room at a MUC service this server does not run (Parley's rooms extension)", () =>
    refused("room.xml", good(ok + `<rooms xmlns='urn:parley:pie:muc:0'>\n<room jid='team@conference.localhost'/>\n<room jid='x@muc.elsewhere.example'/>\n</rooms>\n`),
      /room\.xml:7 <room jid='x@muc.elsewhere.example'>: muc.elsewhere.example is not a MUC service of this server/));

  it("an XInclude loop", () =>
    refused("loop.xml", `<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>\n<xi:include href='loop.xml'/>\n</server-data>`, /loop\.xml.*read twice/));

  it("a user without any credentials", () => refused("nocred.xml", good(`<user name='a'/>\n`), /nocred\.xml:4 <user name='a'.*no password and no SCRAM/));

  it("SCRAM keys of the wrong size", () =>
    refused("scram.xml", good(`<user name='a'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'><iter-count>4096</iter-count><salt>c2FsdA==</salt><server-key>AAAA</server-key><stored-key>AAAA</stored-key></scram-credentials></user>\n`),
      /scram\.xml:4 <scram-credentials mechanism='SCRAM-SHA-1'.*must be 20 bytes/));
});

describe("the parley import / parley export commands", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "parley-cli-migration-"));
    writeFileSync(join(dir, "parley.yaml"), [
      "hosts: [ejabberd.test]", `dataDir: ${join(dir, "data")}`, "storage: { driver: sqlite }", "auth: { scramIterations: 4096 }", "",
    ].join("\n"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const parley = (...args: string[]) => spawnSync(process.execPath, ["--import", "tsx", "src/main.ts", ...args, "--config", join(dir, "parley.yaml")], { encoding: "utf8" });

  it("a refused file exits 4 naming the element and writes nothing; a good one imports; export writes a 0600 file", () => {
    const bad = join(dir, "bad.xml");
    writeFileSync(bad, "<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='ejabberd.test'>\n<user name='a' password='p'><query xmlns='jabber:iq:roster'><item jid='@bad'/></query></user>\n</host></server-data>\n");
    const refusedRun = parley("import", bad);
    assert.equal(refusedRun.status, 4, refusedRun.stderr);
    assert.match(refusedRun.stderr, /import refused, nothing was written: .*bad\.xml:3 <item jid='@bad'>/);
    assert.equal(parley("user", "list").stdout, "");

    const checked = parley("import", "--check", join(FIXTURES, "ejabberd-23.01/20261201-225847.xml"));
    assert.equal(checked.status, 0, checked.stderr);
    assert.match(checked.stdout, /checked, nothing written: 3 accounts/);
    assert.equal(parley("user", "list").stdout, "");

    const imported = parley("import", join(FIXTURES, "ejabberd-23.01/20261201-225847.xml"));
    assert.equal(imported.status, 0, imported.stderr);
    assert.match(imported.stdout, /imported 3 accounts, 3 roster items, 1 offline messages, 0 PEP nodes, 0 rooms/);
    assert.deepEqual(parley("user", "list").stdout.trim().split("\n"), ["alice@ejabberd.test", "bob@ejabberd.test", "carol@ejabberd.test"]);

    const out = join(dir, "out.xml");
    const exported = parley("export", out);
    assert.equal(exported.status, 0, exported.stderr);
    assert.equal(statSync(out).mode & 0o777, 0o600);
    const users = parseElement(readFileSync(out, "utf8").replace(/^<\?xml[^>]*\?>/, "")).getChild("host")!.getChildren("user");
    assert.deepEqual(users.map((u) => u.attrs.name), ["alice", "bob", "carol"]);
    assert.ok(users.every((u) => u.attrs.password === undefined), "no password in the export");
  });
});
