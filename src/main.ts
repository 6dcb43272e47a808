/**
 * The `parley` command line: start the server, manage users, check the configuration.
 * Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid configuration, 4 user error
 * (exists / not found / invalid).
 */
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { ConfigError, loadConfigFile, type Config } from "./config.js";
import { openStorage, startServer } from "./server.js";
import { resolveModules } from "./module-host.js";
import { defaultModules } from "./modules/index.js";
import { AccountError, createAccounts } from "./accounts.js";
import { PARLEY_VERSION } from "./version.js";
import type { Storage } from "./storage/index.js";
import { uploadDir, uploadOptions } from "./modules/upload.js";
import { createLocalFileStore } from "./storage/files/index.js";
import { createUploadAdmin } from "./admin/sources.js";
import { resolve } from "node:path";
import { tryParseJid } from "./xmpp/jid.js";
import { describeDevice } from "./modules/devices.js";
import { handlerTableMarkdown, startHarness } from "./module-harness.js";
import { importPie } from "./migration/import.js";
import { exportPie } from "./migration/export.js";
import { ImportError } from "./migration/reader.js";
import { Agent, request } from "undici";
import { Redis } from "ioredis";
import { isNodeWorker, leaveWorker, reportReady, runNodes, workerConfig } from "./cluster/local.js";
import { ClusterKeys, RedisDirectory } from "./cluster/directory.js";
import { createLogger } from "./log.js";
import { tuneHeapForServing } from "./heap.js";

const USAGE = `parley ${PARLEY_VERSION} — an XMPP server

Usage:
  parley start [--config FILE] [--nodes N]     run in the foreground (SIGTERM/SIGINT stop it gracefully,
                                               SIGHUP reloads certificates); --nodes: N cluster nodes on
                                               this machine sharing the ports (needs a cluster section)
  parley status [--config FILE]                the cluster's nodes, whether they are alive, their sessions
  parley check-config [--config FILE]          validate the configuration and exit
  parley hooks [--config FILE]                 the configured modules' hook handlers, in the order they run
  parley user add JID [--password-file F]      create an account (password prompted, or read from stdin)
  parley user passwd JID [--password-file F]   change a password
  parley user del JID                          delete an account and all its data
  parley user list [HOST]                      list accounts
  parley devices list JID                      devices logged in to an account (XEP-0388 user agents, FAST tokens)
  parley devices revoke JID ID                 forget a device and its tokens; it logs in with the password again
  parley export FILE                           write every account's data to FILE (XEP-0227; SCRAM keys, no passwords)
  parley import FILE... [--skip-unknown] [--check]
                                               read XEP-0227 files (ejabberd export_piefxis, prosody-migrator, parley export);
                                               all checked before anything is written; existing accounts refuse it;
                                               --check only checks
  parley reports [--limit N]                   abuse reports users filed while blocking (XEP-0377), newest first
  parley uploads usage                         uploaded files and bytes per user (XEP-0363)
  parley uploads prune --older-than DAYS       delete uploads older than DAYS now (any purpose)
  parley s2s [--url URL]                       the running server's server-to-server streams and how each
                                               authenticated (read from its /metrics; URL defaults to the
                                               configured plain HTTP, else HTTPS, listener on loopback)

The configuration defaults to config/parley.yaml, else config/parley.example.yaml.
`;

const EXIT = { ok: 0, failure: 1, usage: 2, config: 3, user: 4 } as const;

function takeOption(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i === -1) return undefined;
  const value = args[i + 1];
  if (value === undefined) throw new UsageError(`${name} needs a value`);
  args.splice(i, 2);
  return value;
}

class UsageError extends Error {}

/** The MUC service domain of a host, as the muc module's `domain` option makes it. */
const mucService = (c: Config) => (host: string) =>
  ((c.modules as Record<string, { domain?: string } | undefined>).muc?.domain ?? "conference.{host}").replace("{host}", host);
/** Where the running server's metrics are, from this side of the machine. */
function metricsUrl(c: Config): string | undefined {
  if (!c.metrics.enabled) return undefined;
  const loopback = (address: string) => (address === "::" || address === "0.0.0.0" ? "127.0.0.1" : address.includes(":") ? `[${address}]` : address);
  if (c.listen.http !== null) return `http://${loopback(c.listen.httpAddress)}:${c.listen.http}/metrics`;
  if (c.listen.https !== null) return `https://${loopback(c.listen.address)}:${c.listen.https}/metrics`;
  return undefined;
}

function configPath(explicit: string | undefined): string {
  if (explicit) return explicit;
  if (process.env.PARLEY_CONFIG) return process.env.PARLEY_CONFIG;
  return existsSync("config/parley.yaml") ? "config/parley.yaml" : "config/parley.example.yaml";
}

async function readPassword(file: string | undefined, prompt: string): Promise<string> {
  if (file) return readFileSync(file, "utf8").replace(/\r?\n$/, "");
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: Boolean(process.stdin.isTTY) });
  if (process.stdin.isTTY) {
    process.stderr.write(prompt);
    // Hide what is typed: readline echoes through _writeToOutput.
    (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => {};
  }
  const line = await new Promise<string>((resolve) => rl.once("line", resolve).once("close", () => resolve("")));
  rl.close();
  if (process.stdin.isTTY) process.stderr.write("\n");
  return line;
}

async function withAccounts<T>(config: Config, fn: (accounts: ReturnType<typeof createAccounts>, storage: Storage) => Promise<T>): Promise<T> {
  const storage = await openStorage(config);
  try {
    return await fn(createAccounts(storage, config.hosts, config.auth.scramIterations), storage);
  } finally {
    await storage.close();
  }
}

async function run(argv: string[]): Promise<number> {
  const args = [...argv];
  const config = () => loadConfigFile(configPath(takeOption(args, "--config")));
  const [command, sub] = args;
  switch (command) {
    case "start": {
      const nodes = takeOption(args, "--nodes");
      const c = config();
      if (nodes !== undefined && !isNodeWorker()) {
        const count = Number(nodes);
        if (!Number.isInteger(count) || count < 1 || count > 256) throw new UsageError("--nodes takes a whole number from 1 to 256");
        if (!c.cluster) throw new UsageError("--nodes needs a cluster section in the configuration (docs/CLUSTER.md)");
        await runNodes(count, createLogger(c.log));
        return EXIT.ok;
      }
      tuneHeapForServing();
      const server = await startServer(workerConfig(c));
      reportReady();
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          server.log.info({ signal }, "signal received");
          server.stop().then(resolve, resolve);
        };
        process.once("SIGTERM", () => stop("SIGTERM"));
        process.once("SIGINT", () => stop("SIGINT"));
        // SIGHUP: take renewed certificate files (certbot's deploy hook) and run due ACME orders.
        process.on("SIGHUP", () => {
          server.log.info({ signal: "SIGHUP" }, "signal received: reloading certificates");
          server.reloadCertificates().catch((err) => server.log.error({ err, stage: "tls" }, "certificate reload failed"));
        });
      });
      return EXIT.ok;
    }
    case "hooks": {
      // The modules run in-process on memory storage: nothing of the installation is opened.
      const c = config();
      const harness = await startHarness({ modules: defaultModules, config: c.modules, hosts: c.hosts });
      try {
        process.stdout.write(handlerTableMarkdown(harness.hooks.table()));
      } finally {
        await harness.stop();
      }
      return EXIT.ok;
    }
    case "check-config": {
      const path = configPath(takeOption(args, "--config"));
      const c = loadConfigFile(path);
      resolveModules(defaultModules, c.modules);
      console.log(`${path}: OK (hosts: ${c.hosts.join(", ")}; storage: ${c.storage.driver})`);
      return EXIT.ok;
    }
    case "user": {
      const passwordFile = takeOption(args, "--password-file");
      const c = config();
      const jid = args[2];
      switch (sub) {
        case "add":
        case "passwd": {
          if (!jid) throw new UsageError(`parley user ${sub} needs a JID`);
          const password = await readPassword(passwordFile, `Password for ${jid}: `);
          if (!password) throw new AccountError("invalid-password", "No password given");
          await withAccounts(c, (a) => (sub === "add" ? a.create(jid, password).then(() => undefined) : a.setPassword(jid, password)));
          console.log(sub === "add" ? `created ${jid}` : `password changed for ${jid}`);
          return EXIT.ok;
        }
        case "del":
          if (!jid) throw new UsageError("parley user del needs a JID");
          await withAccounts(c, (a) => a.remove(jid));
          console.log(`deleted ${jid}`);
          return EXIT.ok;
        case "list": {
          const users = await withAccounts(c, (_a, s) => s.accounts.list(jid));
          for (const u of users) console.log(u);
          return EXIT.ok;
        }
        default:
          throw new UsageError("parley user add|passwd|del|list");
      }
    }
    case "devices": {
      const jid = args[2];
      if (!jid || (sub !== "list" && sub !== "revoke")) throw new UsageError("parley devices list JID | parley devices revoke JID ID");
      const parsed = tryParseJid(jid);
      if (!parsed?.local || parsed.resource) throw new AccountError("invalid-jid", `An account is user@host, got ${JSON.stringify(jid)}`);
      const owner = parsed.bare;
      if (sub === "list") {
        const now = Date.now();
        const list = await withAccounts(config(), (_a, s) => s.devices.list(owner));
        for (const d of list) console.log(`${d.id}\t${describeDevice(d, false, now)}`);
        if (list.length === 0) console.error("no devices");
        return EXIT.ok;
      }
      const id = args[3];
      if (!id) throw new UsageError("parley devices revoke JID ID");
      const found = await withAccounts(config(), async (_a, s) => {
        if (!(await s.devices.get(owner, id))) return false;
        await s.devices.delete(owner, id);
        return true;
      });
      if (!found) throw new AccountError("not-found", `${owner} has no device ${id}`);
      // The CLI shares storage, not the running server's sessions: an open session of the device
      // lasts until it disconnects; the user's own "Devices" command ends it at once.
      console.log(`revoked ${id}: its tokens no longer work`);
      return EXIT.ok;
    }
    case "export": {
      const c = config();
      const file = args[1];
      if (!file || args.length > 2) throw new UsageError("parley export FILE");
      const { users, rooms } = await withAccounts(c, (_a, s) => exportPie(s, c.hosts, file, mucService(c)));
      console.log(`exported ${users} accounts and ${rooms} rooms to ${file}`);
      return EXIT.ok;
    }
    case "import": {
      const skipUnknown = args.includes("--skip-unknown");
      const checkOnly = args.includes("--check");
      const c = config();
      const files = args.slice(1).filter((a) => a !== "--skip-unknown" && a !== "--check");
      if (files.length === 0) throw new UsageError("parley import FILE... [--skip-unknown] [--check]");
      const pep = (c.modules as Record<string, { maxItems?: number } | undefined>).pep;
      const report = await withAccounts(c, (_a, s) => importPie(s, files, {
        hosts: c.hosts, mucServices: c.hosts.map(mucService(c)), iterations: c.auth.scramIterations, skipUnknown, checkOnly, maxPepItems: pep?.maxItems ?? 256,
      }));
      for (const line of report.skipped) console.error(`skipped ${line}`);
      console.log(`${checkOnly ? "checked, nothing written:" : "imported"} ${report.users} accounts, ${report.rosterItems} roster items, ${report.offlineMessages} offline messages, ${report.pepNodes} PEP nodes, ${report.rooms} rooms`);
      return EXIT.ok;
    }
    case "reports": {
      const limit = Number(takeOption(args, "--limit") ?? 50);
      if (!Number.isInteger(limit) || limit < 1) throw new UsageError("--limit takes a positive integer");
      const reports = await withAccounts(config(), (_a, s) => s.reports.list(limit));
      for (const r of reports) {
        console.log(JSON.stringify({ at: new Date(r.at).toISOString(), reporter: r.reporter, reported: r.reported, reason: r.reason, text: r.text, stanzaIds: r.stanzaIds }));
      }
      if (reports.length === 0) console.error("no reports");
      return EXIT.ok;
    }
    case "uploads": {
      const c = config();
      const options = uploadOptions.parse((c.modules as Record<string, unknown>).upload ?? {});
      if (sub === "usage") {
        const totals = await withAccounts(c, (_a, s) => s.uploads.totals());
        for (const t of totals) console.log(`${t.owner}\t${t.files} files\t${t.bytes} bytes`);
        if (totals.length === 0) console.error("no uploads");
        return EXIT.ok;
      }
      if (sub === "prune") {
        const days = Number(takeOption(args, "--older-than"));
        if (!Number.isFinite(days) || days < 0) throw new UsageError("parley uploads prune --older-than DAYS");
        const files = createLocalFileStore(uploadDir(resolve(c.dataDir), options.path));
        const removed = await withAccounts(c, (_a, s) => createUploadAdmin(s, files).prune(Date.now() - days * 86_400_000));
        console.log(`removed ${removed} uploads`);
        return EXIT.ok;
      }
      throw new UsageError("parley uploads usage|prune --older-than DAYS");
    }
    case "s2s": {
      const c = config();
      const url = takeOption(args, "--url") ?? metricsUrl(c);
      if (!url) throw new UsageError("metrics are off or no HTTP listener is configured: give --url, or see the web admin's status page");
      const token = c.metrics.tokenFile ? readFileSync(c.metrics.tokenFile, "utf8").split(/\r?\n/)[0]!.trim() : c.metrics.token;
      // The server's own listener on loopback: its certificate may be self-signed.
      const reply = await request(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, dispatcher: new Agent({ connect: { rejectUnauthorized: false } }) });
      const body = await reply.body.text();
      if (reply.statusCode !== 200) throw new Error(`${url} answered ${reply.statusCode}`);
      const rows = [...body.matchAll(/^parley_s2s_connections\{direction="(\w+)",local="([^"]*)",remote="([^"]*)",state="(\w+)",method="([^"]*)"\} (\d+)/gm)];
      for (const [, direction, local, remote, state, method, count] of rows) {
        console.log(`${direction === "out" ? "outgoing" : "incoming"}\t${local} ${direction === "out" ? "->" : "<-"} ${remote}\t${state}\t${method || "-"}\t${count} stream${count === "1" ? "" : "s"}`);
      }
      if (rows.length === 0) console.error("no server-to-server streams");
      return EXIT.ok;
    }
    case "status": {
      const c = config();
      if (!c.cluster) throw new UsageError("parley status reads the cluster's directory: the configuration has no cluster section");
      const redis = new Redis(c.cluster.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
      try {
        await redis.connect();
        const nodes = await RedisDirectory.status(redis, new ClusterKeys(c.cluster.keyPrefix));
        for (const n of nodes) console.log(`${n.node}\t${n.alive ? "alive" : "dead (heartbeat expired)"}\t${n.sessions} session${n.sessions === 1 ? "" : "s"}`);
        if (nodes.length === 0) console.error("no nodes");
      } finally {
        redis.disconnect();
      }
      return EXIT.ok;
    }
    case "--version":
    case "version":
      console.log(PARLEY_VERSION);
      return EXIT.ok;
    case undefined:
    case "help":
    case "--help":
      console.log(USAGE);
      return command === undefined ? EXIT.usage : EXIT.ok;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

run(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => {
    if (err instanceof UsageError) { console.error(`parley: ${err.message}\n\n${USAGE}`); process.exitCode = EXIT.usage; }
    else if (err instanceof ConfigError) { console.error(`parley: ${err.message}`); process.exitCode = EXIT.config; }
    else if (err instanceof AccountError) { console.error(`parley: ${err.message}`); process.exitCode = EXIT.user; }
    else if (err instanceof ImportError) { console.error(`parley: import refused, nothing was written: ${err.message}`); process.exitCode = EXIT.user; }
    else { console.error("parley: fatal:", err); process.exitCode = EXIT.failure; }
  },
// A node of `parley start --nodes` lets go of the primary's channel, so that its process ends.
).finally(leaveWorker);
