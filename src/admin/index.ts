/**
 * Builds the web admin from the server's parts (called once by the composition root): the shared
 * admin actions, the login store, and the sources for certificates, rooms and uploads — the last
 * two only when their modules are loaded.
 */
import { createHmac } from "node:crypto";
import type { z } from "zod";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import type { Storage } from "../storage/index.js";
import type { SessionView } from "../xmpp/sessions.js";
import type { Accounts } from "../accounts.js";
import type { Router } from "../xmpp/router.js";
import type { Metrics } from "../metrics/index.js";
import type { Module } from "../module.js";
import type { HttpHandler } from "../http/server.js";
import { muc } from "../modules/muc/index.js";
import { upload, uploadDir } from "../modules/upload.js";
import { createLocalFileStore } from "../storage/files/index.js";
import { createAdminActions } from "./actions.js";
import { AdminLogins } from "./auth.js";
import { createRoomAdmin, createUploadAdmin, type CertificateSource } from "./sources.js";
import { webAdminHandler, type FederationSource } from "./web.js";

export interface WebAdminParts {
  config: Config;
  log: Logger;
  storage: Storage;
  sessions: SessionView;
  accounts: Accounts;
  router: Router;
  metrics: Metrics | undefined;
  certificates: CertificateSource;
  /** The modules as resolved from the config, with their validated options. */
  modules: ReadonlyArray<{ module: Module<any>; options: unknown }>;
  dataDir: string;
  secret: Buffer;
  /** The server-to-server streams up now (read at each request). */
  federation: FederationSource;
}

export function createWebAdmin(p: WebAdminParts): HttpHandler {
  const { config } = p;
  const optionsOf = <O>(m: Module<O>) => p.modules.find((e) => e.module === m)?.options as O | undefined;
  const mucOptions = optionsOf(muc) as z.output<typeof muc.options> | undefined;
  const uploadOptions = optionsOf(upload) as z.output<typeof upload.options> | undefined;
  const services = mucOptions ? config.hosts.map((h) => mucOptions.domain.replace("{host}", h)) : [];
  return webAdminHandler({
    config, log: p.log.child({ component: "webadmin" }), storage: p.storage, sessions: p.sessions, metrics: p.metrics,
    startedAt: Date.now(), certificates: p.certificates, federation: p.federation,
    actions: createAdminActions({ hosts: config.hosts, accounts: p.accounts, storage: p.storage, sessions: p.sessions, deliver: (s, stanza) => p.router.deliver(s, stanza) }),
    logins: new AdminLogins({
      storage: p.storage, admins: new Set(config.admins), hosts: config.hosts, scramIterations: config.auth.scramIterations,
      sessionMs: config.webAdmin.sessionMinutes * 60_000, windowMs: config.webAdmin.loginWindowMinutes * 60_000,
      maxFailuresPerAddress: config.webAdmin.maxFailuresPerAddress, maxFailuresPerAccount: config.webAdmin.maxFailuresPerAccount,
      key: createHmac("sha256", p.secret).update("parley web admin login forms").digest(),
    }),
    rooms: mucOptions ? createRoomAdmin({
      services, storage: p.storage, request: (iq, t) => p.router.request(iq, t),
      hostOf: (service) => config.hosts[services.indexOf(service)] ?? config.hosts[0]!,
    }) : undefined,
    uploads: uploadOptions ? createUploadAdmin(p.storage, createLocalFileStore(uploadDir(p.dataDir, uploadOptions.path))) : undefined,
  });
}
