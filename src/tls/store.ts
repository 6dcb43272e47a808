/**
 * The live set of server certificates, one per virtual host (covering its service domains), behind
 * the SNI callback and the listeners' default contexts.
 * - A new certificate (ACME, SIGHUP, a tool replacing the configured files) is installed without
 *   a restart: new handshakes use it, established connections keep theirs.
 * - A certificate that fails to load (unreadable, key mismatch) leaves the current one in place;
 *   the failure is logged and kept for the status page (`certificates()`).
 * - Where a host's certificate comes from, first match wins: tls.certificates (files the operator
 *   or certbot manages, watched for changes), ACME (dataDir/acme/), self-signed (dataDir/certs/).
 * - TLS-ALPN-01 (RFC 8737): while an ACME validation is pending for a name, a handshake offering
 *   ALPN "acme-tls/1" with that name in SNI gets the validation certificate instead.
 */
import { watch, type FSWatcher, readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { X509Certificate } from "node:crypto";
import type { SecureContext, TlsOptions, TLSSocket } from "node:tls";
import type { Logger } from "../log.js";
import {
  certificateNames, policyOptions, secureContextFor, selfSignedFiles, standardServiceNames, uncoveredNames,
  type CertificateFiles, type HostTls, type TlsPolicy, type TlsServing,
} from "../xmpp/tls.js";

export type CertificateSource = "configured" | "acme" | "self-signed";

/** What the status page shows of one host's certificate. Times are ISO 8601. */
export interface CertificateStatus {
  host: string;
  source: CertificateSource;
  /** DNS names in the certificate (subjectAltName). */
  names: string[];
  /** Names this host serves that the certificate does not cover. */
  missing: string[];
  issuer: string;
  notBefore: string;
  notAfter: string;
  /** SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprint: string;
  files: CertificateFiles;
  loadedAt: string;
  /** ACME-managed hosts: when renewal is due, the last attempt and its outcome. */
  acme?: { renewAt?: string; nextRetryAt?: string; lastAttemptAt?: string; lastSuccessAt?: string };
  /** The last failure (loading the files, or an ACME order), until a later success. */
  lastError?: { at: string; stage: "load" | "acme"; message: string };
}

interface Entry {
  tls: HostTls;
  x509: X509Certificate;
  source: CertificateSource;
  files: CertificateFiles;
  loadedAt: number;
  acme?: CertificateStatus["acme"];
  lastError?: CertificateStatus["lastError"];
}

export interface CertificateStoreOptions {
  hosts: readonly string[];
  /** Every name a host's certificate must cover: the host, then its service domains. */
  names: (host: string) => readonly string[];
  configured: Record<string, CertificateFiles>;
  /** Hosts whose certificate ACME manages (those without configured files, when ACME is on). */
  acmeHosts: ReadonlySet<string>;
  dataDir: string;
  policy: TlsPolicy;
  log: Logger;
}

export type SniCallback = TlsServing["sniCallback"];

/** What a TLS listener needs: its options, and the default context again whenever it changes. */
export interface TlsListenerSource {
  /** Options for tls.createServer / https.createServer; `protocol` is the ALPN name the listener speaks. */
  serverOptions(protocol: string): TlsOptions;
  /** The default context's options, for server.setSecureContext() after a change. */
  contextOptions(): TlsOptions;
  onChange(listener: () => void): () => void;
}

/** Where ACME keeps a host's certificate and key. */
export function acmeFiles(dataDir: string, host: string): CertificateFiles {
  return { cert: join(dataDir, "acme", `${host}.crt`), key: join(dataDir, "acme", `${host}.key`) };
}

export class CertificateStore implements TlsServing, TlsListenerSource {
  /** Current certificate per host (live: entries are replaced on reload). */
  readonly byHost = new Map<string, HostTls>();
  private readonly entries = new Map<string, Entry>();
  /** Service domain → its host, for SNI. */
  private readonly hostOfName = new Map<string, string>();
  private readonly changeListeners = new Set<() => void>();
  private readonly alpnChallenges = new Map<string, SecureContext>();
  /** Handshakes that chose acme-tls/1, and the validation certificate they get. */
  private readonly validating = new WeakMap<TLSSocket, SecureContext>();
  private readonly watchers: FSWatcher[] = [];
  private readonly pendingReloads = new Map<string, NodeJS.Timeout>();
  private readonly defaultHost: string;

  private constructor(private readonly options: CertificateStoreOptions) {
    this.defaultHost = options.hosts[0]!;
    for (const host of options.hosts) for (const name of options.names(host)) if (!this.hostOfName.has(name)) this.hostOfName.set(name.toLowerCase(), host);
  }

  static async open(options: CertificateStoreOptions): Promise<CertificateStore> {
    const store = new CertificateStore(options);
    for (const host of options.hosts) {
      const { files, source } = await store.filesOf(host);
      // At start a broken configured file is fatal: there is no older certificate to keep.
      store.install(host, files, source, { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") });
    }
    return store;
  }

  get policy(): TlsPolicy {
    return this.options.policy;
  }

  get defaultTls(): SecureContext {
    return this.byHost.get(this.defaultHost)!.context;
  }

  get defaultCert(): { cert: string; key: string } {
    const t = this.byHost.get(this.defaultHost)!;
    return { cert: t.cert, key: t.key };
  }

  /**
   * RFC 6125 / RFC 7590: the certificate of the host (or service domain) the client names. Node
   * calls it on the socket; one whose ALPN callback chose acme-tls/1 gets the validation certificate.
   */
  readonly sniCallback: SniCallback = (() => {
    const store = this;
    return function (this: TLSSocket | undefined, servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) {
      cb(null, (this && store.validating.get(this)) ?? store.contextFor(servername));
    };
  })();

  contextFor(servername: string | undefined): SecureContext {
    const name = (servername ?? "").toLowerCase();
    const host = this.byHost.has(name) ? name : this.hostOfName.get(name) ?? name.slice(name.indexOf(".") + 1);
    return (this.byHost.get(host) ?? this.byHost.get(this.defaultHost)!).context;
  }

  serverOptions(protocol: string): TlsOptions {
    return {
      ...this.defaultCert, ...policyOptions(this.options.policy), SNICallback: this.sniCallback,
      ALPNCallback: this.alpnCallback(protocol),
    } as TlsOptions;
  }

  contextOptions(): TlsOptions {
    return { ...this.defaultCert, ...policyOptions(this.options.policy) };
  }

  /**
   * RFC 7301 ALPN: the listener's protocol when offered; "acme-tls/1" with the validation
   * certificate when a TLS-ALPN-01 challenge is pending for the SNI name (RFC 8737 §3); otherwise
   * no protocol in common, which ends the handshake with no_application_protocol.
   */
  private alpnCallback(protocol: string) {
    const store = this;
    return function (this: TLSSocket, { servername, protocols }: { servername?: string; protocols: string[] }): string | undefined {
      const challenge = servername ? store.alpnChallenges.get(servername.toLowerCase()) : undefined;
      if (challenge && protocols.includes(ACME_TLS_ALPN)) {
        // TLS 1.3 (OpenSSL) asks for the certificate after ALPN, through the SNI callback; TLS 1.2
        // asked before, so the certificate is replaced here too.
        store.validating.set(this, challenge);
        this.setKeyCert(challenge);
        return ACME_TLS_ALPN;
      }
      return protocols.includes(protocol) ? protocol : undefined;
    };
  }

  setAlpnChallenge(name: string, files: { cert: string; key: string }): void {
    this.alpnChallenges.set(name.toLowerCase(), secureContextFor(files, this.options.policy));
  }

  removeAlpnChallenge(name: string): void {
    this.alpnChallenges.delete(name.toLowerCase());
  }

  /** Called after any certificate changed (listeners refresh their default context). */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Read-only status of every host's certificate, for the admin status page. */
  certificates(): CertificateStatus[] {
    return this.options.hosts.map((host) => {
      const e = this.entries.get(host)!;
      return {
        host, source: e.source, names: certificateNames(e.x509), missing: uncoveredNames(e.x509, this.options.names(host)),
        issuer: e.x509.issuer.replace(/\n/g, ", "), notBefore: new Date(e.x509.validFrom).toISOString(),
        notAfter: new Date(e.x509.validTo).toISOString(), fingerprint: e.x509.fingerprint256, files: { ...e.files },
        loadedAt: new Date(e.loadedAt).toISOString(), ...(e.acme ? { acme: { ...e.acme } } : {}),
        ...(e.lastError ? { lastError: { ...e.lastError } } : {}),
      };
    });
  }

  /** When a host's current certificate stops being valid. */
  notAfter(host: string): number {
    return Date.parse(this.entries.get(host)!.x509.validTo);
  }

  sourceOf(host: string): CertificateSource {
    return this.entries.get(host)!.source;
  }

  names(host: string): readonly string[] {
    return this.options.names(host);
  }

  /** Records ACME progress or failure for the status page (the certificate itself is unchanged). */
  noteAcme(host: string, update: { renewAt?: number; retryAt?: number; attemptAt?: number; successAt?: number; error?: string }): void {
    const e = this.entries.get(host);
    if (!e) return;
    const iso = (t: number | undefined) => (t === undefined ? undefined : new Date(t).toISOString());
    e.acme = {
      // Scheduling is stated afresh each time; history is kept.
      renewAt: iso(update.renewAt),
      nextRetryAt: iso(update.retryAt),
      lastAttemptAt: iso(update.attemptAt) ?? e.acme?.lastAttemptAt,
      lastSuccessAt: iso(update.successAt) ?? e.acme?.lastSuccessAt,
    };
    if (update.error !== undefined) e.lastError = { at: new Date().toISOString(), stage: "acme", message: update.error };
    else if (update.successAt !== undefined) e.lastError = undefined;
  }

  /**
   * Installs new PEM material for a host (already written to `files`). Throws, changing nothing,
   * when it cannot be used.
   */
  install(host: string, files: CertificateFiles, source: CertificateSource, pem: { cert: string; key: string }): void {
    const context = secureContextFor(pem, this.options.policy);
    const cert = new X509Certificate(pem.cert);
    const previous = this.entries.get(host);
    this.entries.set(host, { tls: { host, ...pem, context }, x509: cert, source, files, loadedAt: Date.now(), acme: previous?.acme });
    this.byHost.set(host, { host, ...pem, context });
    const missing = uncoveredNames(cert, this.options.names(host));
    const fields = { stage: "tls", host, source, notAfter: new Date(cert.validTo).toISOString(), fingerprint: cert.fingerprint256 };
    this.options.log.info(fields, previous ? "certificate installed" : "certificate loaded");
    if (missing.length) this.options.log.warn({ ...fields, missing }, "certificate does not cover every service domain");
    if (Date.parse(cert.validTo) < Date.now()) this.options.log.warn(fields, "certificate has expired");
    if (previous) for (const listener of this.changeListeners) listener();
  }

  /** Re-reads every host's files (SIGHUP); unchanged files change nothing. */
  async reload(): Promise<void> {
    for (const host of this.options.hosts) await this.reloadHost(host);
  }

  private async reloadHost(host: string): Promise<void> {
    let files: CertificateFiles | undefined;
    try {
      const found = await this.filesOf(host);
      files = found.files;
      const pem = { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") };
      const current = this.byHost.get(host);
      if (current && current.cert === pem.cert && current.key === pem.key) return;
      this.install(host, files, found.source, pem);
    } catch (err) {
      const message = (err as Error).message;
      const e = this.entries.get(host);
      if (e) e.lastError = { at: new Date().toISOString(), stage: "load", message };
      this.options.log.error({ stage: "tls", host, files, err: message }, "certificate reload failed; the current certificate stays in use");
    }
  }

  /**
   * Watches the configured files: certbot swaps symlinks in live/<name>/, other tools write or
   * rename files, so the directories are watched and a change reloads the hosts whose files are
   * there (after a short pause, as the certificate and the key are written one after the other).
   */
  watchConfiguredFiles(settleMs = 250): void {
    const hostsByDir = new Map<string, Set<string>>();
    for (const [host, files] of Object.entries(this.options.configured)) {
      if (!this.options.hosts.includes(host)) continue;
      for (const file of [files.cert, files.key]) {
        const dir = dirname(file);
        if (!hostsByDir.has(dir)) hostsByDir.set(dir, new Set());
        hostsByDir.get(dir)!.add(host);
      }
    }
    for (const [dir, hosts] of hostsByDir) {
      try {
        const watcher = watch(dir, { persistent: false }, () => {
          for (const host of hosts) {
            clearTimeout(this.pendingReloads.get(host));
            this.pendingReloads.set(host, setTimeout(() => {
              this.pendingReloads.delete(host);
              void this.reloadHost(host);
            }, settleMs));
          }
        });
        watcher.on("error", (err) => this.options.log.warn({ stage: "tls", dir, err: err.message }, "watching certificate files failed; SIGHUP still reloads them"));
        this.watchers.push(watcher);
      } catch (err) {
        this.options.log.warn({ stage: "tls", dir, err: (err as Error).message }, "cannot watch certificate files; SIGHUP still reloads them");
      }
    }
  }

  close(): void {
    for (const w of this.watchers) w.close();
    for (const t of this.pendingReloads.values()) clearTimeout(t);
    this.pendingReloads.clear();
  }

  private async filesOf(host: string): Promise<{ files: CertificateFiles; source: CertificateSource }> {
    const configured = this.options.configured[host];
    if (configured) return { files: configured, source: "configured" };
    if (this.options.acmeHosts.has(host)) {
      const files = acmeFiles(this.options.dataDir, host);
      if (existsSync(files.cert) && existsSync(files.key)) return { files, source: "acme" };
    }
    const names = [...new Set([...this.options.names(host), ...standardServiceNames(host)])];
    return { files: await selfSignedFiles(host, names, this.options.dataDir), source: "self-signed" };
  }
}

export const ACME_TLS_ALPN = "acme-tls/1";
