/** The TLS facts (transport.ts) of a TLS socket, whichever transport runs over it. */
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import type { TlsFacts } from "./transport.js";

export function tlsFactsOf(socket: TLSSocket): TlsFacts {
  return {
    version: socket.getProtocol() ?? undefined,
    servername: (socket as TLSSocket & { servername?: string | false }).servername || undefined,
    // RFC 9266 §2 asks for no context value: Node's binding leaves it out when none is passed.
    exportKeyingMaterial: (length, label) => (socket.exportKeyingMaterial as (length: number, label: string) => Buffer)(length, label),
    // The certificate actually served, not the host's current one: it may have been reloaded since.
    serverCertificate: () => (socket.getCertificate() as { raw?: Buffer } | null)?.raw,
    peerCertificates: () => {
      const chain: Buffer[] = [];
      let cert = socket.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
      // The issuer of a self-issued certificate is itself: the walk stops there.
      while (cert?.raw && !chain.some((c) => c.equals(cert!.raw))) {
        chain.push(cert.raw);
        cert = cert.issuerCertificate;
      }
      return chain;
    },
    // In a full handshake the client's Finished comes first; in an abbreviated one, the server's.
    tlsUnique: () => (socket.getProtocol() === "TLSv1.3" ? undefined : (socket.isSessionReused() ? socket.getFinished() : socket.getPeerFinished())),
  };
}
