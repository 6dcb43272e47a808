/**
 * Who is at the other end of an HTTP request, for every web transport (WebSocket, BOSH) and page:
 * the peer itself, or — only when the peer is a configured reverse proxy — the client it names in
 * X-Forwarded-For, and whether the client's side of that proxy was HTTPS (X-Forwarded-Proto).
 * Headers from anyone else are ignored, so a client cannot choose the address that per-address
 * limits, bans and logs see.
 */
import { BlockList, isIP } from "node:net";
import { TLSSocket } from "node:tls";
import type { IncomingMessage } from "node:http";
import { normalizeAddress } from "../xmpp/stream/tcp.js";

export interface HttpClient {
  /** The client's address: the peer's, or the one a trusted proxy forwarded for. */
  address: string;
  /** The client reached us over HTTPS: on our TLS listener, or through a trusted proxy that says so. */
  secure: boolean;
  /** The client's own TLS connection to us (not a proxy's), for channel binding. */
  tls: TLSSocket | undefined;
  /** The request came through a trusted proxy. */
  proxied: boolean;
}

export class TrustedProxies {
  private readonly list = new BlockList();

  constructor(networks: readonly string[]) {
    for (const network of networks) {
      const [address, bits] = network.split("/") as [string, string | undefined];
      const family = isIP(address) === 6 ? "ipv6" : "ipv4";
      if (bits === undefined) this.list.addAddress(address, family);
      else this.list.addSubnet(address, Number(bits), family);
    }
  }

  trusts(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 6 ? "ipv6" : "ipv4");
  }

  clientOf(req: IncomingMessage): HttpClient {
    const socket = req.socket;
    const peer = normalizeAddress(socket.remoteAddress);
    const tls = socket instanceof TLSSocket ? socket : undefined;
    if (!this.trusts(peer)) return { address: peer, secure: tls !== undefined, tls, proxied: false };
    // X-Forwarded-For: client, proxy1, proxy2 — each proxy appends the address it saw. Walk back
    // from our side past the proxies we trust; the first address we do not trust is the client.
    const hops = headerList(req.headers["x-forwarded-for"]).map((hop) => normalizeAddress(stripPort(hop)));
    let address = peer;
    let proxied = false;
    while (hops.length > 0 && this.trusts(address)) {
      const hop = hops.pop()!;
      if (isIP(hop) === 0) break;
      address = hop;
      proxied = true;
    }
    if (!proxied) return { address: peer, secure: tls !== undefined, tls, proxied };
    // The proxy nearest to us set the last value; earlier ones come from further away. Without
    // it, nothing says the client's side was encrypted.
    const proto = headerList(req.headers["x-forwarded-proto"]).at(-1)?.toLowerCase();
    // The TLS session (if any) is the proxy's, not the client's: no channel binding over it.
    return { address, secure: proto === "https", tls: undefined, proxied };
  }
}

function headerList(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return (Array.isArray(value) ? value.join(",") : value).split(",").map((v) => v.trim()).filter(Boolean);
}

/** "203.0.113.7:4711" and "[2001:db8::1]:4711" as some proxies write them. */
function stripPort(hop: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (bracketed) return bracketed[1]!;
  const v4 = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(hop);
  return v4 ? v4[1]! : hop;
}
