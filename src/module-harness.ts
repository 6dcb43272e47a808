/**
 * Modules in one process without sockets: the real hook bus, router, module host and (memory)
 * storage, with client sessions that are plain objects recording what they are sent. Module unit
 * tests use it (docs/MODULES.md), and so does `parley hooks`, which prints the handler table of
 * the configured modules.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { HookBus, priorityName, type HandlerRow } from "./hooks.js";
import { Router } from "./xmpp/router.js";
import { SessionTable, type Session } from "./xmpp/sessions.js";
import { ModuleHost, resolveModules } from "./module-host.js";
import type { Module } from "./module.js";
import { createMemoryStorage } from "./storage/memory/index.js";
import type { Storage } from "./storage/index.js";
import { createAccounts, type Accounts } from "./accounts.js";
import { HttpRoutes } from "./http/server.js";
import { silentLogger, type Logger } from "./log.js";
import { parseJid } from "./xmpp/jid.js";
import { parseElement } from "./xmpp/xml-parse.js";
import type { Element } from "./xmpp/xml.js";

export interface HarnessOptions {
  modules: readonly Module<any>[];
  /** Per-module options as under `modules:` in the config (false disables one). */
  config?: Record<string, unknown>;
  hosts?: readonly string[];
  admins?: readonly string[];
  log?: Logger;
}

/** A bound client session: what the server wrote to it, in order. */
export interface HarnessSession extends Session {
  readonly received: Element[];
  /** The first stanza received (or arriving within the time) that matches. */
  next(match: (stanza: Element) => boolean, timeoutMs?: number): Promise<Element>;
}

export interface ModuleHarness {
  readonly hooks: HookBus;
  readonly router: Router;
  readonly sessions: SessionTable;
  readonly storage: Storage;
  readonly accounts: Accounts;
  readonly host: ModuleHost;
  /** Binds a session for the full JID, creating the account (password "pw") if it does not exist. */
  connect(fullJid: string, options?: { available?: boolean }): Promise<HarnessSession>;
  /** What the client writes: stamped and routed like c2s input; resolves once routing settled. */
  send(session: HarnessSession, stanza: Element | string): Promise<void>;
  /** Ends a session as a closed stream does. */
  disconnect(session: HarnessSession): Promise<void>;
  stop(): Promise<void>;
}

const WAIT_MS = 2000;

export async function startHarness(options: HarnessOptions): Promise<ModuleHarness> {
  const hosts = options.hosts ?? ["localhost"];
  const log = options.log ?? silentLogger();
  const hooks = new HookBus(log);
  const sessions = new SessionTable();
  const storage = createMemoryStorage();
  const accounts = createAccounts(storage, hosts, 4096, hooks);
  const router = new Router(hosts, hooks, sessions, storage.accounts, log);
  const dataDir = mkdtempSync(join(tmpdir(), "parley-harness-"));
  const host = new ModuleHost({
    hosts, hooks, router, sessions, storage, accounts, log, dataDir, secret: randomBytes(32), http: new HttpRoutes(log),
    publicHttpUrl: (domain) => `https://${domain}:5443`, admins: new Set(options.admins ?? []),
  });
  await host.start(resolveModules(options.modules, options.config ?? {}));
  const pending = new Set<Promise<unknown>>();
  const settle = async () => {
    // Routing may hop through storage promises and timers of zero; wait until nothing is in flight.
    for (let quiet = 0; quiet < 3;) {
      await new Promise((resolve) => setImmediate(resolve));
      if (pending.size > 0) { await Promise.allSettled([...pending]); quiet = 0; } else quiet++;
    }
  };
  const track = (result: unknown) => {
    if (!(result instanceof Promise)) return;
    pending.add(result);
    void result.finally(() => pending.delete(result));
  };

  const harness: ModuleHarness = {
    hooks, router, sessions, storage, accounts, host,
    async connect(fullJid, { available = true } = {}) {
      const jid = parseJid(fullJid);
      if (!(await storage.accounts.get(jid.bare))) await accounts.create(jid.bare, "pw");
      const session = harnessSession(fullJid);
      sessions.add(session);
      await hooks.emit("session/bound", { session });
      if (available) await harness.send(session, "<presence/>");
      return session;
    },
    async send(session, stanza) {
      const element = typeof stanza === "string" ? parseElement(stanza) : stanza;
      track(router.fromClient(session, element));
      await settle();
    },
    async disconnect(session) {
      sessions.remove(session);
      track(hooks.emit("session/closed", { session, reason: "closed" }));
      await settle();
    },
    async stop() {
      await host.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return harness;
}

/** A session that is a plain object recording what it is sent; not in any session table until added. */
export function harnessSession(fullJid: string): HarnessSession {
  const received: Element[] = [];
  const waiters = new Set<{ match: (s: Element) => boolean; resolve: (s: Element) => void }>();
  const send = (stanza: Element) => {
    received.push(stanza);
    for (const w of waiters) if (w.match(stanza)) { waiters.delete(w); w.resolve(stanza); }
  };
  return {
    id: fullJid, transport: "tcp", userAgentId: undefined, unacknowledged: undefined, jid: parseJid(fullJid), remoteAddress: "127.0.0.1",
    presence: undefined, priority: 0, interested: false, directedPresence: new Set(), flags: new Set(), confirmsDelivery: false, hibernating: false,
    send,
    sendConfirmed: (stanza) => { send(stanza); return undefined; },
    writable: () => undefined,
    close() {},
    received,
    next(match, timeoutMs = WAIT_MS) {
      const seen = received.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const waiter = { match, resolve: (s: Element) => { clearTimeout(timer); resolve(s); } };
        const timer = setTimeout(() => { waiters.delete(waiter); reject(new Error(`${fullJid}: no matching stanza within ${timeoutMs} ms`)); }, timeoutMs);
        waiters.add(waiter);
      });
    },
  };
}

/** docs/routing.md's handler table: one row per hook, its handlers in the order they run. */
export function handlerTableMarkdown(rows: readonly HandlerRow[]): string {
  const lines = ["| kind | hook | handlers, in the order they run |", "|---|---|---|"];
  const byHook = new Map<string, HandlerRow[]>();
  for (const row of rows) {
    const key = `${row.kind} ${row.hook}`;
    byHook.set(key, [...(byHook.get(key) ?? []), row]);
  }
  for (const [key, list] of byHook) {
    const [kind, hook] = key.split(" ");
    lines.push(`| ${kind} | \`${hook}\` | ${list.map((r) => `${r.owner} ${priorityName(r.priority)}`).join(" → ")} |`);
  }
  return `${lines.join("\n")}\n`;
}
