/**
 * Live XEP-0227 migration from the peers (../shared/peers): fresh accounts on ejabberd and
 * Prosody get data over XMPP, the servers' own tools export it (ejabberdctl export_piefxis,
 * prosody-migrator to its xep0227 store), Parley imports the files, and the accounts log in to
 * Parley and find their contacts. Needs the peers running (`peers start all`, as root); without
 * them it says SKIPPED and why. test/e2e/migration.test.ts covers the same ground with exports
 * captured from these servers, so CI without the peers still checks the formats.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import { populate, USERS, EXPECTED } from "../helpers/migration-data.js";
import { importPie } from "../../src/migration/import.js";

const KIT = resolve(import.meta.dirname, "../../../shared/peers/peers");
const peersEnv = (): Record<string, string> | string => {
  if (!existsSync(KIT)) return `the peers kit is not at ${KIT}`;
  if (process.getuid?.() !== 0) return "the peers kit needs root";
  let out: string;
  try {
    out = execFileSync(KIT, ["env"], { encoding: "utf8" });
  } catch (err) {
    return `peers env failed: ${(err as Error).message}`;
  }
  return Object.fromEntries([...out.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.replace(/^'|'$/g, "")]));
};
const env = peersEnv();
const missing = (server: "EJABBERD" | "PROSODY", tool: string): string | undefined => {
  if (typeof env === "string") return env;
  if (env[`PEERS_${server}_UP`] !== "1") return `${server.toLowerCase()} is not running (../shared/peers/peers start all)`;
  if (!existsSync(tool)) return `${tool} is missing`;
  return undefined;
};
const ejabberdMissing = missing("EJABBERD", "/usr/sbin/ejabberdctl");
const prosodyMissing = missing("PROSODY", "/usr/bin/prosody-migrator");
if (ejabberdMissing) console.log(`# SKIPPED interop/migration from ejabberd: ${ejabberdMissing}`);
if (prosodyMissing) console.log(`# SKIPPED interop/migration from prosody: ${prosodyMissing}`);

const peers = (...args: string[]) => execFileSync(KIT, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
const prefix = `m${Date.now().toString(36)}`;
const names = Object.keys(USERS).map((u) => `${prefix}${u}`);

async function checkOnParley(domain: string, files: string[], expectOffline: boolean): Promise<void> {
  const server: TestServer = await startTestServer({ hosts: [domain] });
  try {
    await importPie(server.storage, files, { hosts: [domain], mucServices: [], iterations: 4096, skipUnknown: false, maxPepItems: 256 });
    const alice = await connect({ port: server.ports.c2s!, domain, username: `${prefix}alice`, password: USERS.alice });
    const roster = (await alice.iq(xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:roster" })))).getChild("query")!.getChildren("item");
    await alice.stop();
    const bob = roster.find((i) => i.attrs.jid === `${prefix}bob@${domain}`);
    assert.equal(bob?.attrs.subscription, "both");
    assert.deepEqual(bob!.getChildren("group").map((g) => g.text()).sort(), ["Friends", "Work"]);
    assert.equal(roster.find((i) => i.attrs.jid === `${prefix}carol@${domain}`)?.attrs.ask, "subscribe");
    if (expectOffline) {
      const carol = await connect({ port: server.ports.c2s!, domain, username: `${prefix}carol`, password: USERS.carol });
      await carol.xmpp.send(xml("presence"));
      await carol.waitFor((s) => s.is("message") && s.getChildText("body") === EXPECTED.offlineBody);
      await carol.stop();
    }
  } finally {
    await server.cleanup();
  }
}

describe("live migration from the peers (XEP-0227)", () => {
  const dirs: string[] = [];
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  it("ejabberd: export_piefxis → parley import → log in, contacts and offline message", { skip: ejabberdMissing }, async () => {
    const e = env as Record<string, string>;
    for (const [u, p] of Object.entries(USERS)) peers("adduser", "ejabberd", `${prefix}${u}`, p);
    try {
      await populate(Number(e.PEERS_EJABBERD_C2S_PORT), e.PEERS_EJABBERD_DOMAIN!, prefix);
      const dir = mkdtempSync(join(tmpdir(), "parley-ejabberd-export-"));
      dirs.push(dir);
      chownSync(dir, Number(execFileSync("id", ["-u", "ejabberd"], { encoding: "utf8" })), 0); // ejabberd writes the files
      peers("ctl", "ejabberd", "export_piefxis", dir);
      const main = readdirSync(dir).filter((f) => /^\d{8}-\d{6}\.xml$/.test(f));
      assert.equal(main.length, 1, `one main file in ${readdirSync(dir).join(", ")}`);
      await checkOnParley(e.PEERS_EJABBERD_DOMAIN!, [join(dir, main[0]!)], true);
    } finally {
      for (const n of names) peers("ctl", "ejabberd", "unregister", n, e.PEERS_EJABBERD_DOMAIN!);
    }
  });

  it("prosody: prosody-migrator → parley import → log in and contacts (0.12 exports no offline messages)", { skip: prosodyMissing }, async () => {
    const e = env as Record<string, string>;
    const domain = e.PEERS_PROSODY_DOMAIN!;
    for (const [u, p] of Object.entries(USERS)) peers("adduser", "prosody", `${prefix}${u}`, p);
    try {
      await populate(Number(e.PEERS_PROSODY_C2S_PORT), domain, prefix);
      const dir = mkdtempSync(join(tmpdir(), "parley-prosody-export-"));
      dirs.push(dir);
      // prosody-migrator 0.12 writes xep0227 files into its built-in data directory
      // (CFG_DATADIR, /var/lib/prosody) whatever the config says; this runs the same script
      // with only that constant pointed at our directory.
      const migrator = join(dir, "prosody-migrator");
      writeFileSync(migrator, readFileSync("/usr/bin/prosody-migrator", "utf8").replace(/^CFG_DATADIR=.*$/m, `CFG_DATADIR='${dir}';`));
      const config = join(dir, "migrator.cfg.lua");
      const stores = `"accounts", "roster", "private", "vcard", "pep-pubsub"`;
      writeFileSync(config, `input { type = "internal"; path = "${e.PEERS_HOME}/prosody/data"; hosts = { ["${domain}"] = { ${stores} } }; }\noutput { type = "xep0227"; }\n`);
      // The migrator switches to the prosody user, which must read the config and write the files.
      const uid = (user: string) => Number(execFileSync("id", ["-u", user], { encoding: "utf8" }));
      for (const p of [dir, config]) chownSync(p, uid("prosody"), 0);
      execFileSync("lua5.4", [migrator, "--config", config, "input", "output"], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
      const files = names.map((n) => join(dir, `${n}@${domain}.xml`)).filter((f) => existsSync(f));
      assert.equal(files.length, 3, `the migrator wrote ${readdirSync(dir).join(", ")}`);
      await checkOnParley(domain, files, false);
    } finally {
      for (const n of names) peers("ctl", "prosody", "deluser", `${n}@${domain}`);
    }
  });
});
