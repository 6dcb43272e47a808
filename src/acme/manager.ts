/**
 * Automatic certificates: ACME (RFC 8555) through acme-client, one certificate per virtual host
 * covering the host and the service domains it serves (conference., upload., push.).
 * - Challenges (RFC 8555 §8): HTTP-01 (§8.3) answered on the HTTP listeners under
 *   /.well-known/acme-challenge/, and TLS-ALPN-01 (RFC 8737) answered on the HTTPS and direct-TLS
 *   listeners; the configured order says which one to answer.
 * - Renewal `renewDaysBeforeExpiry` (30) days before the certificate expires; certificates are
 *   installed into the CertificateStore, so new handshakes use them and live connections stay.
 * - A failed order keeps the current certificate, is logged and shown in certificates(), and is
 *   tried again after an hour (doubling up to a day; SIGHUP tries at once).
 * State in dataDir/acme/: account.key (the ACME account), account.json (its URL per directory),
 * <host>.crt / <host>.key.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Agent as HttpsAgent } from "node:https";
import { generateKeyPairSync } from "node:crypto";
import acme from "acme-client";
import type { Logger } from "../log.js";
import type { HttpHandler } from "../http/server.js";
import { plain } from "../http/server.js";
import { acmeFiles, type CertificateStore } from "../tls/store.js";

export type AcmeChallengeType = "http-01" | "tls-alpn-01";

export interface AcmeSettings {
  directoryUrl: string;
  /** Contact for the CA's expiry and policy mail. */
  email?: string;
  /** Which challenge to answer, in order of preference. */
  challenges: AcmeChallengeType[];
  renewDaysBeforeExpiry: number;
  /** PEM bundle trusted for the directory's HTTPS (a private CA; Pebble in tests). */
  caFile?: string;
}

export interface AcmeManagerDeps {
  settings: AcmeSettings;
  /** The hosts ACME manages. */
  hosts: readonly string[];
  store: CertificateStore;
  dataDir: string;
  log: Logger;
}

const DAY_MS = 86_400_000;
const FIRST_RETRY_MS = 3_600_000;
/** Wake up at least this often, so a clock jump or a long sleep cannot skip a renewal. */
const MAX_SLEEP_MS = 12 * 3_600_000;
export const ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/";

export class AcmeManager {
  /** HTTP-01 tokens being validated → their key authorization. */
  private readonly http01 = new Map<string, string>();
  /** After a failure: when to try a host again, and the wait after that. */
  private readonly retry = new Map<string, { at: number; delay: number }>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly dir: string;

  constructor(private readonly deps: AcmeManagerDeps) {
    this.dir = join(deps.dataDir, "acme");
    acme.setLogger((message) => deps.log.debug({ stage: "acme" }, message));
    if (deps.settings.caFile) {
      // acme-client has one HTTP client per process: the trust set is process-wide.
      acme.axios.defaults.httpsAgent = new HttpsAgent({ ca: readFileSync(deps.settings.caFile) });
    }
  }

  /** RFC 8555 §8.3: GET /.well-known/acme-challenge/<token> answers the key authorization as text. */
  readonly httpChallenge: HttpHandler = (req, res, url) => {
    const keyAuthorization = this.http01.get(url.pathname.slice(ACME_CHALLENGE_PREFIX.length));
    if (req.method !== "GET" || keyAuthorization === undefined) return plain(res, 404, "Not found");
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": Buffer.byteLength(keyAuthorization) });
    res.end(keyAuthorization);
  };

  start(): void {
    this.schedule(0);
  }

  /** Checks every host now, failed ones too (SIGHUP). */
  checkNow(): Promise<void> {
    this.retry.clear();
    return this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.run(), Math.max(0, Math.min(delayMs, MAX_SLEEP_MS)));
    this.timer.unref();
  }

  /** When the host's ACME certificate is due for renewal; 0 (now) when it has none yet. */
  private renewAt(host: string): number {
    const { store } = this.deps;
    if (store.sourceOf(host) !== "acme") return 0;
    return store.notAfter(host) - this.deps.settings.renewDaysBeforeExpiry * DAY_MS;
  }

  /** What the status page shows: renewal time of an ACME certificate, and the next retry after a failure. */
  private schedulingOf(host: string): { renewAt?: number; retryAt?: number } {
    return { renewAt: this.renewAt(host) || undefined, retryAt: this.retry.get(host)?.at };
  }

  private run(): Promise<void> {
    this.running ??= (async () => {
      try {
        for (const host of this.deps.hosts) {
          if (this.stopped) return;
          const due = Math.max(this.renewAt(host), this.retry.get(host)?.at ?? 0);
          if (due > Date.now()) {
            this.deps.store.noteAcme(host, this.schedulingOf(host));
            continue;
          }
          await this.renew(host);
        }
      } finally {
        this.running = undefined;
        const next = Math.min(...this.deps.hosts.map((h) => Math.max(this.renewAt(h), this.retry.get(h)?.at ?? 0)));
        this.schedule(next - Date.now());
      }
    })();
    return this.running;
  }

  private async renew(host: string): Promise<void> {
    const { store, log, settings } = this.deps;
    const names = [...store.names(host)];
    const attemptAt = Date.now();
    log.info({ stage: "acme", host, names, directory: settings.directoryUrl }, "ordering certificate");
    try {
      const pem = await this.order(host, names);
      const files = acmeFiles(this.deps.dataDir, host);
      writeAtomically(files.key, pem.key, 0o600);
      writeAtomically(files.cert, pem.cert, 0o644);
      store.install(host, files, "acme", pem);
      this.retry.delete(host);
      store.noteAcme(host, { attemptAt, successAt: Date.now(), ...this.schedulingOf(host) });
      log.info({ stage: "acme", host, notAfter: new Date(store.notAfter(host)).toISOString() }, "certificate obtained");
    } catch (err) {
      const message = (err as Error).message;
      // RFC 8555 §7.3.1: a CA that no longer knows the account (a reset staging or test CA)
      // answers accountDoesNotExist; the next attempt registers again.
      if (/accountDoesNotExist|account.*(does not exist|not found)/i.test(message)) this.forgetAccount();
      const delay = Math.min((this.retry.get(host)?.delay ?? FIRST_RETRY_MS / 2) * 2, DAY_MS);
      this.retry.set(host, { at: Date.now() + delay, delay });
      store.noteAcme(host, { attemptAt, error: message, ...this.schedulingOf(host) });
      log.error({ stage: "acme", host, err: message, retryInMinutes: Math.round(delay / 60_000) }, "certificate order failed; the current certificate stays in use");
    }
  }

  private async order(host: string, names: string[]): Promise<{ cert: string; key: string }> {
    const { settings, store } = this.deps;
    const client = new acme.Client({
      directoryUrl: settings.directoryUrl,
      accountKey: this.accountKey(),
      accountUrl: this.accountUrls()[settings.directoryUrl],
      // Poll an authorization soon after answering it, then back off (RFC 8555 §7.5.1).
      backoffAttempts: 12, backoffMin: 1000, backoffMax: 30_000,
    });
    const [key, csr] = await acme.crypto.createCsr({ commonName: host, altNames: names }, await acme.crypto.createPrivateEcdsaKey());
    const alpnNames: string[] = [];
    try {
      const cert = await client.auto({
        csr,
        email: settings.email,
        termsOfServiceAgreed: true,
        challengePriority: settings.challenges,
        // The CA validates; a self-check would fail behind NAT without hairpinning.
        skipChallengeVerification: true,
        challengeCreateFn: async (authz, challenge, keyAuthorization) => {
          const type: string = challenge.type;
          if (type === "http-01") {
            this.http01.set(challenge.token, keyAuthorization);
          } else if (type === "tls-alpn-01") {
            const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, await acme.crypto.createPrivateEcdsaKey());
            store.setAlpnChallenge(authz.identifier.value, { cert: alpnCert.toString(), key: alpnKey.toString() });
            alpnNames.push(authz.identifier.value);
          } else {
            throw new Error(`the CA offers no challenge of ${settings.challenges.join(", ")} for ${authz.identifier.value} (got ${type})`);
          }
        },
        challengeRemoveFn: async (authz, challenge) => {
          const type: string = challenge.type;
          if (type === "http-01") this.http01.delete(challenge.token);
          if (type === "tls-alpn-01") store.removeAlpnChallenge(authz.identifier.value);
        },
      });
      return { cert, key: key.toString() };
    } finally {
      for (const name of alpnNames) store.removeAlpnChallenge(name);
      this.rememberAccount(client);
    }
  }

  private accountKey(): Buffer {
    const path = join(this.dir, "account.key");
    if (!existsSync(path)) {
      mkdirSync(this.dir, { recursive: true });
      // Sync on purpose: a second order must not create a second account key.
      writeAtomically(path, createAccountKeySync(), 0o600);
    }
    return readFileSync(path);
  }

  private accountUrls(): Record<string, string> {
    const path = join(this.dir, "account.json");
    return existsSync(path) ? JSON.parse(readFileSync(path, "utf8")) as Record<string, string> : {};
  }

  private forgetAccount(): void {
    const urls = this.accountUrls();
    delete urls[this.deps.settings.directoryUrl];
    writeAtomically(join(this.dir, "account.json"), JSON.stringify(urls, null, 2) + "\n", 0o600);
  }

  private rememberAccount(client: acme.Client): void {
    let url: string;
    try {
      url = client.getAccountUrl();
    } catch {
      return; // no account was created
    }
    const urls = this.accountUrls();
    if (urls[this.deps.settings.directoryUrl] === url) return;
    urls[this.deps.settings.directoryUrl] = url;
    writeAtomically(join(this.dir, "account.json"), JSON.stringify(urls, null, 2) + "\n", 0o600);
  }
}

function createAccountKeySync(): string {
  // ECDSA P-256 (ES256), which every ACME CA accepts for account keys (RFC 8555 §6.2, RFC 7518 §3.1).
  return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

/** Write then rename, so a reader (or a crash) never sees half a file. */
function writeAtomically(path: string, data: string, mode: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, path);
}
