/**
 * Configuration: YAML in config/, validated at start. Errors name the bad key and why.
 * Each module validates its own block (modules.<name>) with the schema in its descriptor.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { cidrSchema } from "./address-list.js";
import { tryParseJid } from "./xmpp/jid.js";
import { cipherListProblem, DEFAULT_TLS_POLICY } from "./xmpp/tls.js";

const port = z.number().int().min(0).max(65535);

/** An IP address or a CIDR block (10.0.0.0/8, fd00::/8). */
const network = cidrSchema;

/** A browser origin (RFC 6454): scheme://host[:port], nothing after it. */
const origin = z.string().refine((v) => {
  try {
    const url = new URL(v);
    return (url.protocol === "https:" || url.protocol === "http:") && url.origin === v.replace(/\/$/, "");
  } catch {
    return false;
  }
}, "not an origin like https://chat.example.org");

const ParserLimitsSchema = (stanzaBytes: number, elements: number) => z.strictObject({
  maxStanzaBytes: z.number().int().min(1024).default(stanzaBytes),
  maxDepth: z.number().int().min(4).max(1000).default(32),
  maxElementsPerStanza: z.number().int().min(8).default(elements),
  maxAttributes: z.number().int().min(4).default(64),
  maxNameLength: z.number().int().min(16).default(256),
  maxLangLength: z.number().int().min(2).default(35),
});

export const ConfigSchema = z.strictObject({
  /** Virtual hosts served by this process. */
  hosts: z.array(z.string().min(1)).min(1).default(["localhost"]),
  /** SQLite file, generated certificates and (later) uploads live here. */
  dataDir: z.string().default("./data"),
  log: z.strictObject({
    level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    pretty: z.boolean().optional(),
  }).prefault({}),
  listen: z.strictObject({
    address: z.string().default("::"),
    /** STARTTLS port (RFC 6120); null disables it. */
    c2s: port.nullable().default(5222),
    /** Direct TLS port (XEP-0368); null disables it. */
    c2sDirectTls: port.nullable().default(5223),
    /** Server-to-server (RFC 6120, federation); null turns incoming federation off. */
    s2s: port.nullable().default(5269),
    /** Server-to-server over direct TLS (XEP-0368, ALPN xmpp-server; publish an _xmpps-server SRV record); off unless a port is given. */
    s2sDirectTls: port.nullable().default(null),
    /** XEP-0114 external components (no TLS in that protocol): off unless a port is given. */
    component: port.nullable().default(null),
    componentAddress: z.string().default("127.0.0.1"),
    /** HTTPS (upload, later WebSocket/BOSH) with the XMPP certificates; null disables it. */
    https: port.nullable().default(5443),
    /** Plain HTTP, for a reverse proxy in front; null disables it. */
    http: port.nullable().default(5280),
    /** Plain HTTP listens here only (the reverse proxy's side). */
    httpAddress: z.string().default("127.0.0.1"),
  }).prefault({}),
  http: z.strictObject({
    /** What clients are told to use, e.g. https://xmpp.example.org (behind a proxy); default https://<domain>:<https port>. */
    publicUrl: z.url().optional(),
    /** Whole-request limit; a 100 MiB upload on a slow link takes minutes. */
    requestTimeoutSeconds: z.number().positive().default(900),
    headersTimeoutSeconds: z.number().positive().default(20),
    /**
     * Reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (the client's
     * address for limits, bans and logs; whether the client's side was HTTPS). Prosody's
     * trusted_proxies default.
     */
    trustedProxies: z.array(network).default(["127.0.0.1", "::1"]),
    /**
     * Browser origins whose pages may use the web transports (WebSocket, BOSH) besides the
     * server's own (its public URL and the built-in chat page); ["*"] allows any page on the web
     * to connect its visitors.
     */
    origins: z.array(z.union([z.literal("*"), origin])).default([]),
  }).prefault({}),
  /** XMPP over WebSocket (RFC 7395) at /xmpp-websocket on the HTTPS and HTTP listeners. */
  websocket: z.strictObject({
    enabled: z.boolean().default(true),
    /** Refuse handshakes without an Origin header (every browser sends one; other clients do not). */
    requireOrigin: z.boolean().default(false),
    /** WebSocket ping after this much silence; a peer that has not answered by the next one is gone. */
    pingIntervalSeconds: z.number().min(1).default(25),
    /** RFC 7395 §3.6.1: answer every <open/> with <close see-other-uri=…/>, moving clients to this endpoint. */
    seeOtherUri: z.url({ protocol: /^(wss|https)$/ }).optional(),
  }).prefault({}),
  /** XMPP over BOSH (XEP-0124, XEP-0206) at /http-bind on the HTTPS and HTTP listeners. */
  bosh: z.strictObject({
    enabled: z.boolean().default(true),
    /** The longest a request is held waiting for something to send (the client's 'wait' is lowered to this). */
    maxWaitSeconds: z.number().int().min(1).max(300).default(60),
    /** The most requests held at once per session (the client's 'hold' is lowered to this). */
    maxHold: z.number().int().min(1).max(5).default(1),
    /** How long a session may go without a request before its connection counts as lost. */
    inactivitySeconds: z.number().int().min(1).max(600).default(60),
    /** The shortest interval between empty requests (XEP-0124 'polling'); faster ones end the session. */
    pollingSeconds: z.number().int().min(0).max(60).default(2),
    /** The longest pause (XEP-0124 §10) a client may ask for; 0 turns pauses off. */
    maxPauseSeconds: z.number().int().min(0).max(3600).default(120),
    /** Time a request body may take to arrive once its headers are in. */
    bodyTimeoutSeconds: z.number().positive().max(300).default(10),
  }).prefault({}),
  /** The built-in web chat (Converse.js) at /chat/ on HTTPS. */
  chat: z.strictObject({
    enabled: z.boolean().default(true),
  }).prefault({}),
  /**
   * Server administrators (bare JIDs of local accounts): they may run the XEP-0133 commands and
   * log in to the web admin.
   */
  admins: z.array(z.string().refine((v) => {
    const jid = tryParseJid(v);
    return jid !== undefined && jid.local !== "" && jid.resource === "";
  }, "must be a bare JID user@host")).default([]),
  /** Prometheus metrics at /metrics on the HTTP(S) listeners. */
  metrics: z.strictObject({
    enabled: z.boolean().default(true),
    /** Addresses that may scrape without a token; the default is loopback only. */
    allowFrom: z.array(cidrSchema).default(["127.0.0.1", "::1"]),
    /** A bearer token that lets any address scrape (Authorization: Bearer …). */
    token: z.string().min(16, "use at least 16 characters").optional(),
    /** The same, read from a file (first line). */
    tokenFile: z.string().optional(),
  }).prefault({}).refine((m) => !(m.token && m.tokenFile), "token and tokenFile are exclusive"),
  /** The web admin at /admin on the HTTPS listener, for the admins above. */
  webAdmin: z.strictObject({
    enabled: z.boolean().default(true),
    /** A login lasts this long without activity. */
    sessionMinutes: z.number().int().min(1).default(30),
    /** Failed logins allowed per address, and per account, in loginWindowMinutes. */
    maxFailuresPerAddress: z.number().int().min(1).default(10),
    maxFailuresPerAccount: z.number().int().min(1).default(5),
    loginWindowMinutes: z.number().int().min(1).default(15),
  }).prefault({}),
  /** Federation with other XMPP servers (RFC 6120 server-to-server, RFC 7590, RFC 6125). */
  s2s: z.strictObject({
    /** Outgoing federation; off means stanzas for other domains bounce with remote-server-not-found. */
    enabled: z.boolean().default(true),
    /** A DNS server for the SRV and address lookups, "address:port" (default: the system's). */
    dnsServer: z.string().regex(/^[^\s]+:\d+$/, "must be address:port, e.g. 127.0.0.1:53").optional(),
    /** Static routes that replace DNS: remote domain → "host:port" (STARTTLS) or "xmpps://host:port" (direct TLS, XEP-0368). */
    routes: z.record(z.string().min(1), z.string().regex(/^(xmpps?:\/\/)?[^\s/]+:\d+$/, "must be host:port or xmpps://host:port")).default({}),
    /** PEM files of the CAs trusted for remote servers' certificates (default: Node's bundled Mozilla roots). */
    caFiles: z.array(z.string()).default([]),
    /** Federate only with these domains (and their subdomains); empty: with every domain not blocked. */
    allowedDomains: z.array(z.string().min(1)).default([]),
    /** Never federate with these domains (and their subdomains). */
    blockedDomains: z.array(z.string().min(1)).default([]),
    /** XEP-0220 Server Dialback for peers whose certificate does not verify. */
    dialback: z.boolean().default(true),
    /**
     * XEP-0198 acknowledgements between servers: offered on incoming streams, enabled on outgoing
     * ones that offer it. Off, the outgoing queue learns what a peer has by XEP-0199 round trips.
     */
    streamManagement: z.boolean().default(true),
    /**
     * XEP-0288 bidirectional streams: offered on incoming streams and asked for on outgoing ones,
     * so that one TCP connection carries stanzas both ways (as Prosody's mod_s2s_bidi, on by default).
     */
    bidi: z.boolean().default(true),
    /** Refuse outgoing streams to servers whose certificate does not verify (no dialback then). */
    requireValidCertificates: z.boolean().default(false),
    connectTimeoutSeconds: z.number().positive().default(10),
    /** An incoming stream that has authenticated no domain by then is closed (connection-timeout). */
    authTimeoutSeconds: z.number().positive().default(30),
    /** The longest a stanza waits for a remote server before it bounces (remote-server-timeout). */
    queueTimeoutSeconds: z.number().positive().default(60),
    /** Stanzas waiting per remote domain; more bounce. */
    maxQueuedStanzas: z.number().int().min(1).default(1000),
    /** An outgoing stream with nothing to send, or an incoming one that hears nothing, closes after this. */
    idleSeconds: z.number().positive().default(300),
    /** Stanzas per second one incoming stream may send on average (bursts of twice that); past it the stream is read more slowly. */
    maxStanzasPerSecond: z.number().int().min(1).default(2000),
    /** A stream kept over that rate this long without slowing down ends (policy-violation). */
    floodSeconds: z.number().positive().default(5),
    /** Incoming s2s connections from one address at once (Prosody and ejabberd open one or two per domain). */
    maxConnectionsPerAddress: z.number().int().min(1).default(20),
    /** The largest stanza from a remote server once it authenticated (before that, limits.preAuth). */
    maxStanzaBytes: z.number().int().min(10000).default(524288),
  }).prefault({}),
  /** XEP-0114 external components allowed to connect: domain → shared secret. */
  components: z.record(z.string().min(1), z.strictObject({ secret: z.string().min(8) })).default({}),
  tls: z.strictObject({
    /** Per host: PEM certificate chain and key files. Hosts without one get a self-signed certificate. */
    certificates: z.record(z.string(), z.strictObject({ cert: z.string(), key: z.string() })).default({}),
    handshakeTimeoutSeconds: z.number().positive().default(10),
    /** Lowest protocol version accepted, everywhere TLS is served (STARTTLS, direct TLS, HTTPS). */
    minVersion: z.enum(["TLSv1.2", "TLSv1.3"]).default(DEFAULT_TLS_POLICY.minVersion),
    /** OpenSSL cipher list (TLS 1.3 suites by their TLS_ names); default: Mozilla "intermediate", ECDHE + AEAD only. */
    ciphers: z.string().min(1).default(DEFAULT_TLS_POLICY.ciphers).superRefine((ciphers, ctx) => {
      const problem = cipherListProblem(ciphers);
      if (problem) ctx.addIssue({ code: "custom", message: `OpenSSL refuses this cipher list (${problem})` });
    }),
    /** Automatic certificates (RFC 8555) for the hosts without tls.certificates entries. */
    acme: z.strictObject({
      /** Enabling it means agreeing to the CA's terms of service. */
      enabled: z.boolean().default(false),
      directoryUrl: z.url().default("https://acme-v02.api.letsencrypt.org/directory"),
      email: z.email().optional(),
      /** Which challenge to answer, by preference: http-01 needs port 80 on the plain HTTP listener, tls-alpn-01 port 443 on HTTPS or direct TLS. */
      challenges: z.array(z.enum(["http-01", "tls-alpn-01"])).min(1).default(["http-01", "tls-alpn-01"]),
      renewDaysBeforeExpiry: z.number().int().min(1).max(60).default(30),
      /** PEM file trusted for the directory's HTTPS, for a private ACME CA. */
      caFile: z.string().optional(),
    }).prefault({}),
  }).prefault({}),
  storage: z.discriminatedUnion("driver", [
    z.strictObject({
      driver: z.literal("sqlite"),
      /** Relative paths are inside dataDir. */
      path: z.string().default("parley.sqlite"),
      synchronous: z.enum(["normal", "full"]).default("normal"),
    }),
    z.strictObject({
      driver: z.literal("postgres"),
      /** postgres://user:password@host:5432/database */
      url: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL"),
      schema: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be a plain SQL identifier").default("public"),
      poolSize: z.number().int().min(1).max(100).default(10),
      /** Shown in pg_stat_activity. */
      applicationName: z.string().default("parley"),
    }),
    z.strictObject({ driver: z.literal("memory") }),
  ]).prefault({ driver: "sqlite" }),
  limits: z.strictObject({
    preAuth: ParserLimitsSchema(8192, 32).prefault({}),
    postAuth: ParserLimitsSchema(262144, 10000).prefault({}),
    negotiationTimeoutSeconds: z.number().positive().default(60),
    idleSeconds: z.number().positive().default(300),
    pingTimeoutSeconds: z.number().positive().default(60),
    maxResourcesPerUser: z.number().int().min(1).default(10),
    maxConnectionsPerAddress: z.number().int().min(1).default(50),
    maxSendBufferBytes: z.number().int().min(65536).default(16 * 1024 * 1024),
  }).prefault({}),
  /** XEP-0198 stream management. */
  streamManagement: z.strictObject({
    /** How long a dropped session waits to be resumed (Prosody: 10 minutes). */
    resumeTimeoutSeconds: z.number().int().min(1).default(600),
    /** The most a client may ask for with <enable max=…/>. */
    maxResumeTimeoutSeconds: z.number().int().min(1).default(3600),
    /** Unacknowledged stanzas per session before the stream is closed (and they are re-routed). */
    maxUnackedStanzas: z.number().int().min(10).default(1000),
    /**
     * What a session waiting for resumption may hold for its client, in bytes (characters). Past
     * it the session ends and its stanzas go to the user's other resources or offline storage.
     */
    maxHibernatedQueueBytes: z.number().int().min(65536).default(2 * 1024 * 1024),
  }).prefault({}),
  auth: z.strictObject({
    scramIterations: z.number().int().min(4096).default(10000),
    maxFailuresPerStream: z.number().int().min(1).max(10).default(3),
    banAfterFailures: z.number().int().min(1).default(20),
    banSeconds: z.number().int().min(1).default(3600),
    /** XEP-0484 FAST tokens: a device that stays away longer than the lifetime logs in with its password again. */
    fast: z.strictObject({
      tokenTtlDays: z.number().positive().default(21),
      /** A token older than this is replaced when it is used. */
      rotateAfterHours: z.number().positive().default(24),
      /** Devices (XEP-0388 user agents) remembered per account; the one seen longest ago goes first. */
      maxDevicesPerUser: z.number().int().min(1).default(20),
    }).prefault({}),
  }).prefault({}),
  /**
   * Many nodes serving the same domains (docs/CLUSTER.md): the session directory and the traffic
   * between nodes go through Redis; storage must be the shared Postgres.
   */
  cluster: z.strictObject({
    /** Unique per process; `parley start --nodes N` appends -1 … -N. */
    nodeId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "letters, digits, '.', '_' and '-' only"),
    /** redis://[user:password@]host:port[/db] or rediss:// (ioredis URL forms). */
    redisUrl: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL"),
    /** Every key and channel starts with this. */
    keyPrefix: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/).default("parley"),
    /** How often a node renews its heartbeat key. */
    heartbeatSeconds: z.number().positive().default(2),
    /** The heartbeat key's TTL: a node silent this long is dead, and its directory entries go. */
    nodeTimeoutSeconds: z.number().positive().default(10),
  }).refine((c) => c.nodeTimeoutSeconds >= 2 * c.heartbeatSeconds, "nodeTimeoutSeconds must be at least twice heartbeatSeconds").optional(),
  /** Module options by module name; `false` disables a module that is on by default. */
  modules: z.record(z.string(), z.union([z.literal(false), z.record(z.string(), z.unknown()), z.null()])).default({}),
});

export type Config = z.output<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(readonly problems: string[], source: string) {
    super(`Invalid configuration (${source}):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

export function formatIssues(error: z.ZodError, prefix: readonly (string | number)[] = []): string[] {
  return error.issues.map((issue) => {
    const path = [...prefix, ...issue.path].join(".") || "(root)";
    return `${path}: ${issue.message}`;
  });
}

export function parseConfig(raw: unknown, source = "config"): Config {
  const result = ConfigSchema.safeParse(raw ?? {});
  if (!result.success) throw new ConfigError(formatIssues(result.error), source);
  const hosts = result.data.hosts.map((h) => h.toLowerCase());
  if (new Set(hosts).size !== hosts.length) throw new ConfigError(["hosts: listed twice"], source);
  const { maxSendBufferBytes, postAuth } = result.data.limits;
  // One stanza over the send bound would end any stream it is sent to.
  if (maxSendBufferBytes < 2 * postAuth.maxStanzaBytes) {
    throw new ConfigError([`limits.maxSendBufferBytes: must be at least twice limits.postAuth.maxStanzaBytes (${2 * postAuth.maxStanzaBytes})`], source);
  }
  // docs/CLUSTER.md: a node's SQLite file or memory is invisible to the other nodes.
  if (result.data.cluster && result.data.storage.driver !== "postgres") {
    throw new ConfigError([`cluster: needs storage.driver: postgres (shared by every node), not ${result.data.storage.driver}`], source);
  }
  // Compared with prepared JIDs later (RFC 7622), so stored prepared.
  const admins = result.data.admins.map((a) => tryParseJid(a)!.bare);
  return { ...result.data, hosts, admins };
}

export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError([`cannot read ${path}: ${(err as Error).message}`], path);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError([`not valid YAML: ${(err as Error).message}`], path);
  }
  return parseConfig(raw, path);
}
