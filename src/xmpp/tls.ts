/**
 * TLS material and policy.
 * - One certificate per virtual host, chosen by SNI (RFC 6120 §13.7.1, RFC 7590); the certificate
 *   names the host and its service domains (conference., upload., push.). The live set of
 *   certificates is the CertificateStore (src/tls/store.ts): it reloads without a restart.
 * - A host with no configured certificate (and none from ACME yet) gets a self-signed ECDSA P-256
 *   certificate generated on first start and kept in the data directory.
 * - Protocol and cipher policy: Mozilla's "intermediate" profile, as RFC 9325 recommends —
 *   TLS 1.2 with ECDHE key exchange and AEAD ciphers only (RFC 9325 §4.2: "Implementations
 *   MUST support and prefer to negotiate cipher suites offering forward secrecy"; CBC and SHA-1
 *   suites are gone), and TLS 1.3. Both are configurable (tls.minVersion, tls.ciphers).
 */
import "reflect-metadata"; // @peculiar/x509 needs it loaded first
import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash, webcrypto, X509Certificate } from "node:crypto";
import * as x509 from "@peculiar/x509";

export interface CertificateFiles {
  cert: string;
  key: string;
}

export interface HostTls {
  host: string;
  cert: string;
  key: string;
  context: SecureContext;
}

export type TlsVersion = "TLSv1.2" | "TLSv1.3";

/** The protocol floor and cipher list every TLS server of Parley uses. */
export interface TlsPolicy {
  minVersion: TlsVersion;
  /** OpenSSL cipher list; names starting with TLS_ are TLS 1.3 suites (Node splits them out). */
  ciphers: string;
}

/** Mozilla Server Side TLS "intermediate" (v5.7), restricted to ECDHE as RFC 9325 §4.2 prefers. */
export const INTERMEDIATE_CIPHERS = [
  "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

export const DEFAULT_TLS_POLICY: TlsPolicy = { minVersion: "TLSv1.2", ciphers: INTERMEDIATE_CIPHERS };

/** The context options a policy stands for; the client picks among the allowed suites (Mozilla intermediate). */
export function policyOptions(policy: TlsPolicy): SecureContextOptions {
  return { minVersion: policy.minVersion, ciphers: policy.ciphers, honorCipherOrder: false };
}

/** A secure context for one certificate under the policy; throws when the key does not match. */
export function secureContextFor(files: { cert: string; key: string }, policy: TlsPolicy): SecureContext {
  return createSecureContext({ cert: files.cert, key: files.key, ...policyOptions(policy) });
}

/** Why a cipher list is unusable, or undefined when OpenSSL accepts it. */
export function cipherListProblem(ciphers: string): string | undefined {
  try {
    createSecureContext({ ciphers });
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The names a host's certificate must cover: the host itself, then its service domains. */
export type CertificateNames = (host: string) => readonly string[];

/**
 * A self-signed certificate naming the host and every service domain explicitly (no wildcard: a
 * `*.localhost` wildcard has one label after it, which OpenSSL and GnuTLS refuse, RFC 6125 §7.2).
 */
export async function generateSelfSigned(host: string, serviceNames: readonly string[] = []): Promise<{ cert: string; key: string }> {
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const names = [...new Set([host, ...serviceNames])].map((value) => ({ type: "dns" as const, value }));
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString("hex").replace(/^[89a-f]/, "1"),
    name: `CN=${host}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 825 * 24 * 3600 * 1000),
    signingAlgorithm: alg,
    keys: keys as unknown as CryptoKeyPair,
    extensions: [
      new x509.SubjectAlternativeNameExtension(names),
      new x509.BasicConstraintsExtension(false),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    ],
  });
  return { cert: cert.toString("pem") + "\n", key: pkcs8Pem(Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey))) };
}

export function pkcs8Pem(der: Buffer): string {
  return `-----BEGIN PRIVATE KEY-----\n${der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n?$/, "\n")}-----END PRIVATE KEY-----\n`;
}

/** DNS names of a certificate's subjectAltName. */
export function certificateNames(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? "").split(/,\s*/).filter((n) => n.startsWith("DNS:")).map((n) => n.slice(4).toLowerCase());
}

/** Names the certificate does not cover (by RFC 6125 matching, as clients do). */
export function uncoveredNames(cert: X509Certificate, names: readonly string[]): string[] {
  return names.filter((n) => cert.checkHost(n, { wildcards: true, partialWildcards: false }) === undefined);
}

/** The self-signed files of a host in the data directory, (re)generated when missing, expired or short of names. */
export async function selfSignedFiles(host: string, names: readonly string[], dataDir: string): Promise<CertificateFiles> {
  const dir = join(dataDir, "certs");
  const files = { cert: join(dir, `${host}.crt`), key: join(dir, `${host}.key`) };
  let usable = existsSync(files.cert) && existsSync(files.key);
  if (usable) {
    try {
      const cert = new X509Certificate(readFileSync(files.cert));
      usable = uncoveredNames(cert, names).length === 0 && Date.parse(cert.validTo) > Date.now() + 86_400_000;
    } catch {
      usable = false;
    }
  }
  if (!usable) {
    mkdirSync(dir, { recursive: true });
    const generated = await generateSelfSigned(host, names.filter((n) => n !== host));
    writeFileSync(files.key, generated.key, { mode: 0o600 });
    writeFileSync(files.cert, generated.cert);
  }
  return files;
}

/**
 * Loads configured certificates; generates (once) and loads self-signed ones for the other hosts,
 * naming conference., upload. and push. of each. A fixed snapshot, for tools and benchmarks; the
 * server itself uses the reloadable CertificateStore.
 */
export async function loadHostTls(hosts: readonly string[], configured: Record<string, CertificateFiles>, dataDir: string, policy: TlsPolicy = DEFAULT_TLS_POLICY): Promise<Map<string, HostTls>> {
  const out = new Map<string, HostTls>();
  for (const host of hosts) {
    const files = configured[host] ?? await selfSignedFiles(host, [host, ...standardServiceNames(host)], dataDir);
    const cert = readFileSync(files.cert, "utf8");
    const key = readFileSync(files.key, "utf8");
    out.set(host, { host, cert, key, context: secureContextFor({ cert, key }, policy) });
  }
  return out;
}

/** The service domains Parley serves under a host with its default module configuration. */
export function standardServiceNames(host: string): string[] {
  return ["conference", "upload", "push"].map((label) => `${label}.${host}`);
}

/** What serves TLS: the live context of the default host and the SNI callback. */
export interface TlsServing {
  /** The default host's current context (clients without SNI, or naming no host of ours). */
  readonly defaultTls: SecureContext;
  readonly sniCallback: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;
}

/**
 * Options for a server-side TLSSocket (STARTTLS, RFC 6120 §5): the current context, which carries
 * the policy (protocol floor and ciphers), and the SNI callback for the other hosts.
 */
export function serverTlsOptions(serving: TlsServing): { isServer: true; secureContext: SecureContext; SNICallback: TlsServing["sniCallback"] } {
  return { isServer: true, secureContext: serving.defaultTls, SNICallback: serving.sniCallback };
}

/**
 * RFC 5929 §4.1 tls-server-end-point: the hash of the server certificate, with SHA-256 when the
 * certificate's signature uses MD5 or SHA-1, otherwise the signature's own hash.
 */
export function serverEndPoint(certificate: string | Buffer): Buffer {
  const cert = new X509Certificate(certificate);
  const alg = /sha(384|512)/i.exec(String((cert as unknown as { signatureAlgorithm?: string }).signatureAlgorithm ?? ""));
  const hash = alg ? `sha${alg[1]}` : "sha256";
  return createHash(hash).update(cert.raw).digest();
}
