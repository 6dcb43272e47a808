/**
 * Where a remote XMPP server listens: RFC 6120 §3.2 (version of March 2011) with RFC 2782 SRV
 * ordering.
 *
 * RFC 6120 §3.2.1: "The preferred process for FQDN resolution is to use [DNS-SRV] records", of
 * service "xmpp-server" over TCP. §3.2.2: when there are no SRV records or the lookup fails, the
 * initiating entity falls back to the domain's own A/AAAA records on the "xmpp-server" port 5269.
 * A single SRV record whose target is "." means the service is decidedly not available
 * (RFC 2782): no fallback then.
 *
 * XEP-0368 (SRV records for XMPP over TLS, version 1.1.0): "_xmpps-server._tcp" records name
 * ports that speak TLS from the first byte. Both sets are merged into one RFC 2782 order; at equal
 * priority the direct-TLS ones go first (no STARTTLS round trip).
 *
 * Static routes (configuration) come first; a configured DNS server replaces the system's.
 */
import { Resolver, lookup } from "node:dns/promises";

export const XMPP_SERVER_PORT = 5269;

export interface SrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

/** A host and port to try, in order. */
export interface Target {
  host: string;
  port: number;
  /** TLS from the first byte (XEP-0368), else STARTTLS. */
  directTls?: boolean;
}

/** A static route from the configuration: "host:port" (STARTTLS) or "xmpps://host:port" (direct TLS). */
export function parseRoute(route: string): Target {
  const directTls = route.startsWith("xmpps://");
  const hostPort = route.replace(/^xmpps?:\/\//, "");
  const at = hostPort.lastIndexOf(":");
  return { host: hostPort.slice(0, at).replace(/^\[(.*)\]$/, "$1"), port: Number(hostPort.slice(at + 1)), directTls };
}

/** The DNS questions s2s asks; tests and the peers kit pass their own server. */
export interface S2SDns {
  srv(name: string): Promise<SrvRecord[]>;
  /** IPv4 and IPv6 addresses of a host. */
  addresses(host: string): Promise<string[]>;
}

/** The system resolver, or the DNS server at `server` ("127.0.0.1:16253"). */
export function createDns(server?: string): S2SDns {
  const resolver = new Resolver({ timeout: 3000, tries: 2 });
  if (server) resolver.setServers([server]);
  return {
    srv: (name) => resolver.resolveSrv(name),
    addresses: server
      ? async (host) => {
        const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
        return [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
      }
      // getaddrinfo: /etc/hosts and the system's configuration.
      : async (host) => (await lookup(host, { all: true })).map((a) => a.address),
  };
}

/**
 * RFC 2782: lowest priority first; within a priority, a weighted random order: "choose a uniform
 * random number between 0 and the sum computed (inclusive), and select the RR whose running sum
 * value is the first in the selected order which is greater than or equal to the random number
 * selected". `random` returns [0, 1).
 */
export function orderSrv<R extends SrvRecord>(records: readonly R[], random: () => number = Math.random): R[] {
  const byPriority = new Map<number, R[]>();
  for (const r of records) byPriority.set(r.priority, [...(byPriority.get(r.priority) ?? []), r]);
  const out: R[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    // Zero-weight records first, so they have a small chance of being picked (RFC 2782).
    const left = byPriority.get(priority)!.sort((a, b) => a.weight - b.weight);
    while (left.length) {
      const total = left.reduce((sum, r) => sum + r.weight, 0);
      const pick = Math.floor(random() * (total + 1));
      let running = 0;
      let index = left.findIndex((r) => (running += r.weight) >= pick);
      if (index < 0) index = left.length - 1;
      out.push(left.splice(index, 1)[0]!);
    }
  }
  return out;
}

export type Resolution = { targets: Target[] } | { unavailable: string };

/** The targets for a remote domain: a static route, SRV records, or the domain itself on 5269. */
export async function resolveServer(domain: string, dns: S2SDns, routes: ReadonlyMap<string, Target>): Promise<Resolution> {
  const route = routes.get(domain);
  if (route) return { targets: [route] };
  /** The service's records; "refused" when a single record with target "." says it is decidedly not available (RFC 2782). */
  const lookup = async (service: string): Promise<SrvRecord[] | "refused"> => {
    try {
      const records = await dns.srv(`_${service}._tcp.${domain}`);
      return records.length === 1 && records[0]!.name === "." ? "refused" : records;
    } catch {
      // NXDOMAIN, no records, or a failed lookup: all fall back (§3.2.2).
      return [];
    }
  };
  const [direct, starttls] = await Promise.all([lookup("xmpps-server"), lookup("xmpp-server")]);
  const tagged = [
    ...(direct === "refused" ? [] : direct).map((r) => ({ ...r, directTls: true })),
    ...(starttls === "refused" ? [] : starttls).map((r) => ({ ...r, directTls: false })),
  ];
  let hosts: Target[];
  if (tagged.length) {
    // A stable sort after the RFC 2782 order: ties in priority go to direct TLS.
    const ordered = orderSrv(tagged).sort((a, b) => a.priority - b.priority || Number(b.directTls) - Number(a.directTls));
    hosts = ordered.map((r) => ({ host: r.name.replace(/\.$/, ""), port: r.port, directTls: r.directTls }));
  } else if (starttls === "refused") {
    return { unavailable: "SRV says the service is not available" };
  } else {
    hosts = [{ host: domain, port: XMPP_SERVER_PORT, directTls: false }];
  }
  // Each host's addresses, in order; a host without any is skipped.
  const targets: Target[] = [];
  for (const { host, port, directTls } of hosts) {
    let addresses: string[] = [];
    try {
      addresses = await dns.addresses(host);
    } catch {
      // Skipped like a host without records.
    }
    for (const address of addresses) targets.push({ host: address, port, directTls });
  }
  return targets.length ? { targets } : { unavailable: `no address for ${domain}` };
}
