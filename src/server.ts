/**
 * The composition root: config → logger → storage → sessions → router → hooks → modules →
 * listeners. The order matters where commented.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { Config } from "./config.js";
import { createLogger, type Logger } from "./log.js";
import { HookBus } from "./hooks.js";
import { SessionTable, type Session } from "./xmpp/sessions.js";
import { Router } from "./xmpp/router.js";
import { ModuleHost, resolveModules } from "./module-host.js";
import { defaultModules } from "./modules/index.js";
import { createAccounts, type Accounts } from "./accounts.js";
import { createMemoryStorage } from "./storage/memory/index.js";
import { createSqliteStorage } from "./storage/sqlite/index.js";
import { createPostgresStorage } from "./storage/postgres/index.js";
import type { Storage } from "./storage/index.js";
import { standardServiceNames } from "./xmpp/tls.js";
import { CertificateStore, type CertificateStatus } from "./tls/store.js";
import { AcmeManager, ACME_CHALLENGE_PREFIX } from "./acme/manager.js";
import { listenC2S, type C2SListener, type C2SListenerDeps } from "./xmpp/c2s/listener.js";
import { listenComponents, type ComponentListener } from "./xmpp/component.js";
import { S2SPool, type OutgoingStatus } from "./xmpp/s2s/pool.js";
import { listenS2S, type IncomingListener, type IncomingStatus } from "./xmpp/s2s/incoming.js";
import type { InboundOptions } from "./xmpp/s2s/inbound.js";
import { createDns, parseRoute } from "./xmpp/s2s/resolve.js";
import { loadTrustAnchors } from "./xmpp/s2s/pkix.js";
import { dialbackKey } from "./xmpp/s2s/dialback.js";
import { domainPolicy } from "./xmpp/s2s/policy.js";
import { HttpRoutes, listenHttp, type HttpListener } from "./http/server.js";
import { C2SRegistry } from "./xmpp/c2s/registry.js";
import { FastTokens } from "./auth/fast.js";
import { AuthThrottle } from "./xmpp/c2s/throttle.js";
import { Admission } from "./xmpp/c2s/admission.js";
import { C2SNegotiation } from "./xmpp/c2s/negotiation.js";
import { TrustedProxies } from "./http/forwarded.js";
import { mountWebSocket, WEBSOCKET_PATH } from "./http/websocket.js";
import { mountDiscovery, BOSH_LINK_REL, WEBSOCKET_LINK_REL, type ConnectionEndpoint } from "./http/discovery.js";
import { mountChat } from "./http/chat.js";
import { NS } from "./xmpp/ns.js";
import { BoshService } from "./xmpp/stream/bosh.js";
import { BOSH_BODY_OVERHEAD, mountBosh } from "./http/bosh.js";
import { StanzaError, StreamError } from "./errors.js";
import { tryParseJid } from "./xmpp/jid.js";
import type { Module } from "./module.js";
import { Metrics } from "./metrics/index.js";
import { instrumentStorage } from "./metrics/storage.js";
import { metricsHandler } from "./metrics/http.js";
import { AddressList } from "./address-list.js";
import { push } from "./modules/push.js";
import { createWebAdmin } from "./admin/index.js";
import { certificatesFromPem } from "./admin/sources.js";
import { ClusterNode, type ClusterStatus } from "./cluster/node.js";

export interface Server {
  readonly config: Config;
  readonly log: Logger;
  readonly storage: Storage;
  readonly accounts: Accounts;
  readonly sessions: SessionTable;
  /** undefined when metrics.enabled is false. */
  readonly metrics: Metrics | undefined;
  readonly ports: { c2s?: number; c2sDirectTls?: number; component?: number; https?: number; http?: number; s2s?: number; s2sDirectTls?: number };
  /** Server-to-server streams up now, and how each authenticated. */
  s2s(): { outgoing: OutgoingStatus[]; incoming: IncomingStatus[] };
  /** Each host's certificate: names, expiry, where it comes from, the last failure (read-only). */
  certificates(): CertificateStatus[];
  /** Re-reads certificate files and runs due ACME orders now (SIGHUP). */
  reloadCertificates(): Promise<void>;
  /** The BOSH sessions (undefined when BOSH is off). */
  readonly bosh: BoshService | undefined;
  /** This node's view of the cluster (undefined without a `cluster` section). */
  cluster(): ClusterStatus | undefined;
  stop(): Promise<void>;
}

export async function openStorage(config: Config): Promise<Storage> {
  if (config.storage.driver === "memory") return createMemoryStorage();
  if (config.storage.driver === "postgres") {
    const { url, schema, poolSize, applicationName } = config.storage;
    return createPostgresStorage({ url, schema, poolSize, applicationName });
  }
  const path = isAbsolute(config.storage.path) ? config.storage.path : join(resolve(config.dataDir), config.storage.path);
  return createSqliteStorage({ path, synchronous: config.storage.synchronous });
}

/** A per-installation secret (fake SCRAM salts); created once in the data directory. */
function loadSecret(dataDir: string): Buffer {
  const path = join(dataDir, "secret.key");
  if (!existsSync(path)) {
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(path, randomBytes(32).toString("hex"), { mode: 0o600 });
  }
  return Buffer.from(readFileSync(path, "utf8").trim(), "hex");
}

function readMetricsToken(config: Config): string | undefined {
  const { token, tokenFile } = config.metrics;
  if (!tokenFile) return token;
  const fromFile = readFileSync(tokenFile, "utf8").split(/\r?\n/)[0]!.trim();
  if (fromFile.length < 16) throw new Error(`metrics.tokenFile: ${tokenFile} holds fewer than 16 characters`);
  return fromFile;
}

/** XEP-0198 queue lengths of the sessions with stream management (hibernated ones included). */
function* smQueueLengths(sessions: Iterable<Session>): Iterable<number> {
  for (const s of sessions) if (s.unacknowledged !== undefined) yield s.unacknowledged;
}

export interface StartOptions {
  log?: Logger;
  modules?: readonly Module<any>[];
}

export async function startServer(config: Config, options: StartOptions = {}): Promise<Server> {
  const log = options.log ?? createLogger(config.log);
  // Module options are validated before anything is opened, so a bad config changes nothing.
  const modules = resolveModules(options.modules ?? defaultModules, config.modules);
  const dataDir = resolve(config.dataDir);
  const metricsToken = readMetricsToken(config);
  const metrics = config.metrics.enabled ? new Metrics() : undefined;
  // Wrapped before anyone holds it, so every storage operation is timed.
  const storage = metrics ? instrumentStorage(await openStorage(config), metrics) : await openStorage(config);
  const hooks = new HookBus(log);
  // docs/CLUSTER.md: on a cluster the session table also answers for the other nodes' sessions.
  const cluster = config.cluster ? new ClusterNode(config.cluster, log) : undefined;
  const sessions = cluster?.sessions ?? new SessionTable();
  const accounts = createAccounts(storage, config.hosts, config.auth.scramIterations, hooks);
  const router = new Router(config.hosts, hooks, sessions, storage.accounts, log, metrics);
  const secret = loadSecret(dataDir);
  const httpRoutes = new HttpRoutes(log);
  const ports: Server["ports"] = {};
  // Service domains (upload.<host>, …) are reached at their host's address by default, as in
  // ejabberd: it resolves wherever `npm start` ran, while upload.localhost does not.
  const hostOf = (domain: string) => config.hosts.find((h) => domain === h || domain.endsWith(`.${h}`)) ?? domain;
  const publicHttpUrl = (domain: string) => config.http.publicUrl?.replace(/\/+$/, "")
    ?? (ports.https !== undefined ? `https://${hostOf(domain)}:${ports.https}` : `http://${hostOf(domain)}:${ports.http ?? 80}`);
  const host = new ModuleHost({ hosts: config.hosts, hooks, router, sessions, ...(cluster ? { placement: cluster.rooms } : {}), storage, accounts, log, dataDir, secret, http: httpRoutes, publicHttpUrl, admins: new Set(config.admins) });
  await host.start(modules);
  const registry = new C2SRegistry();
  // Stanzas from other nodes are routed as soon as it joins: after the modules, before the listeners.
  if (cluster) {
    try {
      await cluster.start(router, hooks, registry);
    } catch (err) {
      await host.stop();
      await storage.close();
      throw err;
    }
  }

  // Certificates cover each host and the service domains its modules serve.
  const moduleDomains = Object.values(config.modules).flatMap((o) => (o && typeof o.domain === "string" ? [o.domain] : []));
  const certificateNames = (h: string) => [h, ...new Set([...standardServiceNames(h), ...moduleDomains.map((d) => d.replace("{host}", h))])]
    .filter((d) => d === h || router.isLocalDomain(d));
  const acmeHosts = new Set(config.tls.acme.enabled ? config.hosts.filter((h) => !config.tls.certificates[h]) : []);
  let certificates: CertificateStore;
  try {
    certificates = await CertificateStore.open({
      hosts: config.hosts, names: certificateNames, configured: config.tls.certificates, acmeHosts, dataDir, log,
      policy: { minVersion: config.tls.minVersion, ciphers: config.tls.ciphers },
    });
  } catch (err) {
    await cluster?.stop();
    await host.stop();
    await storage.close();
    throw err;
  }
  certificates.watchConfiguredFiles();
  const acme = acmeHosts.size ? new AcmeManager({ settings: config.tls.acme, hosts: [...acmeHosts], store: certificates, dataDir, log }) : undefined;
  if (acme) httpRoutes.add(ACME_CHALLENGE_PREFIX, acme.httpChallenge);
  const fast = new FastTokens(storage.devices, {
    ttlMs: config.auth.fast.tokenTtlDays * 86_400_000,
    rotateAfterMs: config.auth.fast.rotateAfterHours * 3_600_000,
    maxDevicesPerUser: config.auth.fast.maxDevicesPerUser,
  });
  const throttle = new AuthThrottle({ banAfter: config.auth.banAfterFailures, banSeconds: config.auth.banSeconds, freeFailures: 2, maxDelayMs: 5000 });
  if (metrics) {
    const pushOptions = modules.find((m) => m.module === push)?.options as { requestTimeoutSeconds: number } | undefined;
    metrics.observe(hooks, {
      sessions,
      transportOf: (session) => session.transport,
      smQueues: () => smQueueLengths(sessions.all()),
      offlineStored: () => storage.offline.total(),
      // Read at scrape time, once the s2s pool and listeners below exist.
      federation: () => federationStatus(),
      ...(pushOptions ? { pushTimeoutMs: pushOptions.requestTimeoutSeconds * 1000 } : {}),
    });
    httpRoutes.add("/metrics", metricsHandler(metrics, { allowFrom: new AddressList(config.metrics.allowFrom), token: metricsToken }));
  }
  const deps: C2SListenerDeps = {
    hosts: config.hosts,
    // Live views of the certificate store: a reloaded certificate serves the next handshake.
    get defaultTls() { return certificates.defaultTls; },
    get defaultCert() { return certificates.defaultCert; },
    sniCallback: certificates.sniCallback,
    limits: {
      preAuth: config.limits.preAuth,
      postAuth: config.limits.postAuth,
      negotiationTimeoutMs: config.limits.negotiationTimeoutSeconds * 1000,
      idleMs: config.limits.idleSeconds * 1000,
      pingTimeoutMs: config.limits.pingTimeoutSeconds * 1000,
      maxResourcesPerUser: config.limits.maxResourcesPerUser,
      maxAuthFailuresPerStream: config.auth.maxFailuresPerStream,
      maxSendBufferBytes: config.limits.maxSendBufferBytes,
    },
    hooks,
    router,
    sessions,
    storage,
    log,
    throttle,
    admission: new Admission(throttle, config.limits.maxConnectionsPerAddress),
    saslSecret: secret,
    scramIterations: config.auth.scramIterations,
    features: host.streamFeatures,
    unauthenticatedIq: host.unauthenticatedIq,
    nonzas: host.nonzas,
    bindFeatures: host.bindFeatures,
    fast,
    sm: {
      resumeTimeoutMs: config.streamManagement.resumeTimeoutSeconds * 1000,
      maxResumeTimeoutMs: config.streamManagement.maxResumeTimeoutSeconds * 1000,
      maxUnacked: config.streamManagement.maxUnackedStanzas,
      maxHibernatedChars: config.streamManagement.maxHibernatedQueueBytes,
    },
    registry,
    ...(cluster ? { resumption: cluster } : {}),
  };

  if (config.webAdmin.enabled) {
    httpRoutes.add("/admin", createWebAdmin({
      config, log, storage, sessions, accounts, router, metrics, modules, dataDir, secret,
      certificates: { certificates: () => certificatesFromPem(certificates.byHost.values()).certificates() },
      // Read at request time, once the s2s pool and listener below exist.
      federation: () => federationStatus(),
    }));
  }
  // The web endpoints (RFC 7395 WebSocket, XEP-0156 discovery, the chat page) on the HTTP listeners.
  const proxies = new TrustedProxies(config.http.trustedProxies);
  const ownOrigins = (): string[] => {
    const origins = new Set<string>();
    if (config.http.publicUrl) origins.add(new URL(config.http.publicUrl).origin);
    if (ports.https !== undefined) for (const h of config.hosts) origins.add(new URL(`https://${h}:${ports.https}`).origin);
    return [...origins];
  };
  const web = config.websocket.enabled
    ? mountWebSocket({
      origins: config.http.origins,
      requireOrigin: config.websocket.requireOrigin,
      pingIntervalMs: config.websocket.pingIntervalSeconds * 1000,
      seeOtherUri: config.websocket.seeOtherUri,
      preAuth: config.limits.preAuth,
      postAuth: config.limits.postAuth,
    }, { routes: httpRoutes, proxies, admission: deps.admission, throttle, log, ownOrigins, startStream: (transport) => new C2SNegotiation(transport, deps), ...(metrics ? { metrics } : {}) })
    : undefined;
  // XEP-0206 at /http-bind on both HTTP listeners: client streams like the c2s listeners' ones.
  const bosh = config.bosh.enabled ? new BoshService({
    hosts: config.hosts, limits: config.bosh, preAuth: config.limits.preAuth, log,
    // A BOSH session holds an admission slot (and counts as a connection) while it lives.
    admit: (address) => {
      const release = deps.admission.admit(address);
      if (!release) return undefined;
      metrics?.opened("bosh");
      return () => { metrics?.closed("bosh"); release(); };
    },
    startStream: (transport) => { new C2SNegotiation(transport, deps); },
  }) : undefined;
  const boshEndpoint = bosh && mountBosh(httpRoutes, bosh, {
    origins: config.http.origins,
    ownOrigins,
    clientOf: (req) => proxies.clientOf(req),
    maxBodyBytes: config.limits.postAuth.maxStanzaBytes + BOSH_BODY_OVERHEAD, bodyTimeoutMs: config.bosh.bodyTimeoutSeconds * 1000,
  });
  const endpoints: ConnectionEndpoint[] = [];
  if (web) endpoints.push({ rel: WEBSOCKET_LINK_REL, path: WEBSOCKET_PATH, scheme: "wss" });
  if (boshEndpoint) endpoints.push({ rel: BOSH_LINK_REL, path: "/http-bind", scheme: "https" });
  mountDiscovery({ routes: httpRoutes, hosts: config.hosts, publicHttpUrl, endpoints });
  if (config.chat.enabled) {
    mountChat({
      routes: httpRoutes, proxies, hosts: config.hosts, publicHttpUrl, websocket: web !== undefined,
      // What the register module offers a stream from this address (XEP-0077 stream feature).
      registrationOffered: (address) => host.streamFeatures.preAuth.some((offer) =>
        offer({ secure: true, remoteAddress: address, transport: "websocket" })?.is("register", NS.REGISTER_FEATURE)),
    });
  }

  // Federation (RFC 6120 server-to-server): stanzas for remote domains go out through the pool;
  // the router decides what is remote, the pool only how it gets there.
  const s2sTrust = loadTrustAnchors(config.s2s.caFiles);
  const s2sDns = createDns(config.s2s.dnsServer);
  const s2sKey = (receiving: string, originating: string, streamId: string) => dialbackKey(secret, receiving, originating, streamId);
  const s2sPostAuth = { ...config.limits.postAuth, maxStanzaBytes: config.s2s.maxStanzaBytes };
  // What remote servers send us, on incoming streams or (XEP-0288) back on outgoing ones.
  const s2sInbound: InboundOptions = {
    route: (stanza) => router.fromRemote(stanza),
    maxStanzasPerSecond: config.s2s.maxStanzasPerSecond, floodMs: config.s2s.floodSeconds * 1000, log,
  };
  const s2s = config.s2s.enabled ? new S2SPool({
    dns: s2sDns,
    routes: new Map(Object.entries(config.s2s.routes).map(([domain, route]) => [domain.toLowerCase(), parseRoute(route)])),
    trust: s2sTrust,
    tlsPolicy: certificates.policy,
    limits: s2sPostAuth,
    connectTimeoutMs: config.s2s.connectTimeoutSeconds * 1000,
    queueTimeoutMs: config.s2s.queueTimeoutSeconds * 1000,
    idleMs: config.s2s.idleSeconds * 1000,
    maxQueued: config.s2s.maxQueuedStanzas,
    requireValidCertificate: config.s2s.requireValidCertificates,
    streamManagement: config.s2s.streamManagement,
    bidi: config.s2s.bidi ? s2sInbound : undefined,
    certificateFor: (domain) => {
      const tls = certificates.byHost.get(hostOf(domain)) ?? certificates.byHost.get(config.hosts[0]!)!;
      return { cert: tls.cert, key: tls.key };
    },
    dialbackKey: s2sKey,
    bounce: (stanza, error) => void router.bounce(stanza, error),
    outbox: storage.s2sOutbox,
    outboxOwner: config.cluster?.nodeId ?? "",
    request: (iq) => router.request(iq),
    log,
    ...(metrics ? { counters: metrics } : {}),
  }) : undefined;
  // A dead node's queued federation stanzas are sent by its reaper (docs/CLUSTER.md, "s2s outbox").
  if (s2s) cluster?.whenReaped((node) => s2s.adopt(node));
  const federates = domainPolicy(config.s2s.allowedDomains, config.s2s.blockedDomains);
  // A domain the configuration excludes gets RFC 6120 §8.3.3.9 not-allowed, never a connection.
  const detachRemote = s2s && router.attachRemote((stanza) =>
    federates(tryParseJid(stanza.attrs.to)!.domain) ? s2s.send(stanza) : router.bounce(stanza, new StanzaError("not-allowed")));
  const s2sListeners: IncomingListener[] = [];
  const s2sAdmission = new Admission(throttle, config.s2s.maxConnectionsPerAddress);
  const federationStatus = () => ({ outgoing: s2s?.status() ?? [], incoming: s2sListeners.flatMap((l) => l.status()) });

  // Listeners last: nothing reaches the server before every module is ready.
  const listeners: Array<C2SListener | ComponentListener | HttpListener | IncomingListener> = [];
  const tlsHandshakeTimeoutMs = config.tls.handshakeTimeoutSeconds * 1000;
  const listenOpts = { host: config.listen.address, tlsHandshakeTimeoutMs, tls: certificates, ...(metrics ? { metrics } : {}) };
  try {
    // Before any client can send: what waited from before the restart goes out first. (A peer
    // that verifies our dialback key before the s2s listener below is up gets a refusal, and the
    // stream is tried again a second later.)
    await s2s?.restore();
    if (config.listen.c2s !== null) {
      const l = await listenC2S({ ...listenOpts, port: config.listen.c2s, directTls: false }, deps);
      listeners.push(l);
      ports.c2s = l.port;
    }
    if (config.listen.c2sDirectTls !== null) {
      const l = await listenC2S({ ...listenOpts, port: config.listen.c2sDirectTls, directTls: true }, deps);
      listeners.push(l);
      ports.c2sDirectTls = l.port;
    }
    const httpOpts = { routes: httpRoutes, log, requestTimeoutMs: config.http.requestTimeoutSeconds * 1000, headersTimeoutMs: config.http.headersTimeoutSeconds * 1000 };
    if (config.listen.https !== null) {
      const l = await listenHttp({ ...httpOpts, host: config.listen.address, port: config.listen.https,
        tls: certificates });
      listeners.push(l);
      ports.https = l.port;
    }
    if (config.listen.http !== null) {
      const l = await listenHttp({ ...httpOpts, host: config.listen.httpAddress, port: config.listen.http });
      listeners.push(l);
      ports.http = l.port;
    }
    if (config.listen.component !== null) {
      const l = await listenComponents({
        host: config.listen.componentAddress, port: config.listen.component, limits: config.limits.postAuth, router, log,
        secrets: new Map(Object.entries(config.components).map(([domain, c]) => [domain.toLowerCase(), c.secret])),
        handshakeTimeoutMs: config.limits.negotiationTimeoutSeconds * 1000,
      });
      listeners.push(l);
      ports.component = l.port;
    }
    const s2sListen = (port: number, directTls: boolean) => listenS2S({
      host: config.listen.address, port, directTls, tls: certificates, tlsHandshakeTimeoutMs, trust: s2sTrust,
      preAuth: config.limits.preAuth, postAuth: s2sPostAuth,
      negotiationTimeoutMs: config.s2s.authTimeoutSeconds * 1000, idleMs: config.s2s.idleSeconds * 1000,
      dialback: config.s2s.dialback, streamManagement: config.s2s.streamManagement, isLocalDomain: (d) => router.isServed(d), federates,
      ...s2sInbound,
      attachReverse: config.s2s.bidi && s2s ? (stream) => s2s.attachReverse(stream) : undefined,
      // Dialback keys are checked by calling the peer's authoritative server (XEP-0220 §2.3).
      verifyDialback: (local, remote, id, key) => s2s ? s2s.verifyDialback(local, remote, id, key) : Promise.resolve(false),
      dialbackKey: s2sKey, log,
      // Its own budget: remote servers do not take the connections of clients at the same address.
      admit: (address) => s2sAdmission.admit(address),
      ...(metrics ? { counters: metrics } : {}),
    });
    if (config.listen.s2s !== null) {
      const l = await s2sListen(config.listen.s2s, false);
      s2sListeners.push(l);
      listeners.push(l);
      ports.s2s = l.port;
    }
    if (config.listen.s2sDirectTls !== null) {
      const l = await s2sListen(config.listen.s2sDirectTls, true);
      s2sListeners.push(l);
      listeners.push(l);
      ports.s2sDirectTls = l.port;
    }
  } catch (err) {
    s2s?.stop();
    detachRemote?.();
    web?.close();
    await Promise.all(listeners.map((l) => l.close()));
    certificates.close();
    await cluster?.stop();
    await host.stop();
    metrics?.stop();
    await storage.close();
    throw err;
  }
  log.info({ hosts: config.hosts, storage: storage.driver, modules: host.loaded.map((m) => m.name), ports, ...(cluster ? { node: cluster.nodeId } : {}) }, "Parley started");
  // Challenges are answered by the listeners, so orders start once they listen.
  acme?.start();

  let stopping: Promise<void> | undefined;
  return {
    config, log, storage, accounts, sessions, metrics, ports, bosh,
    s2s: federationStatus,
    cluster: () => cluster?.status(),
    certificates: () => certificates.certificates(),
    async reloadCertificates() {
      await certificates.reload();
      await acme?.checkNow();
    },
    stop() {
      stopping ??= (async () => {
        log.info("stopping");
        await hooks.emit("server/stopping", {});
        await acme?.stop();
        certificates.close();
        // Before the HTTP listeners drop their connections: BOSH clients learn of the shutdown
        // on the requests they have open.
        bosh?.shutdown();
        await boshEndpoint?.flushed();
        // Stanzas still waiting for a remote server bounce to their local senders while those are connected.
        s2s?.stop();
        detachRemote?.();
        const closing = Promise.all(listeners.map((l) => l.close()));
        // RFC 6120 §4.9.3.20: clients learn the server is going down. Their sessions end, so
        // unacknowledged messages go to offline storage (P5) before storage closes.
        await registry.closeAll(new StreamError("system-shutdown"));
        await closing;
        web?.close();
        // After the sessions ended (their directory entries went), before the modules stop.
        await cluster?.stop();
        await host.stop();
        metrics?.stop();
        await storage.close();
        log.info("stopped");
      })();
      return stopping;
    },
  };
}
