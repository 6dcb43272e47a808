/**
 * TLS material: one certificate per virtual host, chosen by SNI (RFC 6120 §13.7.1, RFC 7590);
 * TLS 1.2 or newer only. A host with no configured certificate gets a self-signed ECDSA P-256
 * certificate generated on first start and kept in the data directory.
 */
import "reflect-metadata"; // @peculiar/x509 needs it loaded first
import { createSecureContext, type SecureContext } from "node:tls";
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

export const TLS_MIN_VERSION = "TLSv1.2" as const;

export async function generateSelfSigned(host: string): Promise<{ cert: string; key: string }> {
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const names = [host, `*.${host}`].map((value) => ({ type: "dns" as const, value }));
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString("hex").replace(/^[89a-f]/, "1"),
    name: `CN=${host}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 825 * 24 * 3600 * 1000),
    signingAlgorithm: alg,
    keys: keys as unknown as CryptoKeyPair,
    extensions: [new x509.SubjectAlternativeNameExtension(names), new x509.BasicConstraintsExtension(false)],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n?$/, "\n")}-----END PRIVATE KEY-----\n`;
  return { cert: cert.toString("pem") + "\n", key: keyPem };
}

/** Loads configured certificates; generates (once) and loads self-signed ones for the other hosts. */
export async function loadHostTls(hosts: readonly string[], configured: Record<string, CertificateFiles>, dataDir: string): Promise<Map<string, HostTls>> {
  const out = new Map<string, HostTls>();
  for (const host of hosts) {
    let files = configured[host];
    if (!files) {
      const dir = join(dataDir, "certs");
      files = { cert: join(dir, `${host}.crt`), key: join(dir, `${host}.key`) };
      if (!existsSync(files.cert) || !existsSync(files.key)) {
        mkdirSync(dir, { recursive: true });
        const generated = await generateSelfSigned(host);
        writeFileSync(files.key, generated.key, { mode: 0o600 });
        writeFileSync(files.cert, generated.cert);
      }
    }
    const cert = readFileSync(files.cert, "utf8");
    const key = readFileSync(files.key, "utf8");
    out.set(host, { host, cert, key, context: createSecureContext({ cert, key, minVersion: TLS_MIN_VERSION }) });
  }
  return out;
}

/**
 * RFC 5929 §4.1 tls-server-end-point: the hash of the server certificate, with SHA-256 when the
 * certificate's signature uses MD5 or SHA-1, otherwise the signature's own hash.
 */
export function serverEndPoint(certPem: string): Buffer {
  const cert = new X509Certificate(certPem);
  const alg = /sha(384|512)/i.exec(String((cert as unknown as { signatureAlgorithm?: string }).signatureAlgorithm ?? ""));
  const hash = alg ? `sha${alg[1]}` : "sha256";
  return createHash(hash).update(cert.raw).digest();
}
