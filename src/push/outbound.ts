/**
 * Outbound HTTPS to URLs a user supplied — Web Push endpoints (RFC 8030 §5: the subscription's
 * push resource), which a registration hands us — without becoming a request forgery primitive
 * (blind SSRF: making the server connect to loopback, the LAN or a cloud metadata service).
 *
 * - The host must be on the allowlist of push services (exact names or "*.suffix").
 * - Every address the host resolves to must be public unicast: loopback, RFC 1918 and unique-local,
 *   link-local (169.254.169.254 and fd00:ec2::254, the cloud metadata services, included), CGNAT,
 *   multicast, unspecified, reserved and documentation ranges are refused, also when written as
 *   IPv4-mapped or NAT64 IPv6.
 * - The check runs in the socket's own DNS lookup (and on IP literals before connecting), so the
 *   address checked is the address connected to: a name that re-resolves between a check and the
 *   connect (DNS rebinding) cannot swap it.
 * - Redirects are not followed (node:https never does, and nothing here adds it): a 3xx is an
 *   answer like any other failure.
 */
import { Agent, type AgentOptions, type RequestOptions } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import type { Duplex } from "node:stream";

/**
 * The Web Push services of the browsers in use (as of 2026): Chrome and the other Chromium
 * browsers use FCM, Firefox Mozilla's autopush, Safari Apple's, Edge Windows Push Notification
 * Services (hosts like wns2-par02p.notify.windows.com).
 */
export const DEFAULT_PUSH_SERVICE_HOSTS: readonly string[] = [
  "fcm.googleapis.com",
  "updates.push.services.mozilla.com",
  "push.services.mozilla.com",
  "web.push.apple.com",
  "*.notify.windows.com",
];

export interface OutboundPolicy {
  /** Host names, exact or "*.suffix" (any depth below the suffix). */
  allowedHosts: readonly string[];
  /** Only for tests against a push service on loopback. */
  allowPrivateAddresses: boolean;
}

/**
 * A URL or address the policy refuses; the message says why, without secrets (no path, no token).
 * `permanent` unless the name merely failed to resolve (that may pass).
 */
export class OutboundRefused extends Error {
  constructor(message: string, readonly permanent = true) {
    super(message);
  }
}

/** All addresses of a name, as node:dns reports them. Passed in so tests can play DNS. */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

export const systemResolver: Resolver = (hostname) => new Promise((resolve, reject) => {
  dnsLookup(hostname, { all: true }, (err, addresses) => (err ? reject(err) : resolve(addresses)));
});

const NOT_PUBLIC = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.0.2.0", 24], ["192.88.99.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15],
  ["198.51.100.0", 24], ["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4],
] as const) NOT_PUBLIC.addSubnet(net, prefix, "ipv4");
// Inside 2000::/3 (global unicast), the parts that are not: IETF protocol assignments (Teredo
// among them), documentation, 6to4 (it embeds an IPv4 address we would have to trust), SRv6 SIDs.
for (const [net, prefix] of [["2001::", 23], ["2001:db8::", 32], ["2002::", 16], ["3fff::", 20], ["5f00::", 16]] as const) {
  NOT_PUBLIC.addSubnet(net, prefix, "ipv6");
}
const GLOBAL_UNICAST = new BlockList();
GLOBAL_UNICAST.addSubnet("2000::", 3, "ipv6");

/** The 8 groups of an IPv6 address (no zone), or undefined. */
function ipv6Groups(address: string): number[] | undefined {
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const bytes = dotted[1]!.split(".").map(Number);
    text = `${text.slice(0, dotted.index)}${((bytes[0]! << 8) | bytes[1]!).toString(16)}:${((bytes[2]! << 8) | bytes[3]!).toString(16)}`;
  }
  const [head, tail] = text.split("::") as [string, string | undefined];
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((g) => Number.parseInt(g, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const groups = tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

/** The IPv4 address inside an IPv4-mapped (::ffff:0:0/96) or NAT64 (64:ff9b::/96) address. */
function embeddedIpv4(address: string): string | undefined {
  const g = ipv6Groups(address);
  if (!g) return undefined;
  const mapped = g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0);
  if (!mapped && !nat64) return undefined;
  return [g[6]! >> 8, g[6]! & 0xff, g[7]! >> 8, g[7]! & 0xff].join(".");
}

/** Whether an IP address is public unicast — somewhere a push service can be, and nothing of ours. */
export function isPublicAddress(address: string): boolean {
  const ip = address.replace(/%.*$/, ""); // a zone id only ever comes with link-local addresses
  const family = isIP(ip);
  if (family === 4) return !NOT_PUBLIC.check(ip, "ipv4");
  if (family !== 6) return false;
  const v4 = embeddedIpv4(ip);
  if (v4 !== undefined) return isPublicAddress(v4);
  return GLOBAL_UNICAST.check(ip, "ipv6") && !NOT_PUBLIC.check(ip, "ipv6");
}

const normalHost = (host: string) => host.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");

export function hostAllowed(host: string, allowed: readonly string[]): boolean {
  const name = normalHost(host);
  return allowed.some((pattern) => {
    const p = normalHost(pattern);
    return p.startsWith("*.") ? name.endsWith(p.slice(1)) && name.length > p.length - 1 : name === p;
  });
}

/** The host a connection is about to go to: allowlisted, and, if an IP literal, public. */
function checkHost(host: string, policy: OutboundPolicy): void {
  if (!hostAllowed(host, policy.allowedHosts)) throw new OutboundRefused(`${normalHost(host)} is not an allowed push service`);
  const literal = normalHost(host);
  if (isIP(literal) && !policy.allowPrivateAddresses && !isPublicAddress(literal)) throw new OutboundRefused(`${literal} is not a public address`);
}

function checkAddresses(host: string, addresses: readonly LookupAddress[], policy: OutboundPolicy): void {
  if (addresses.length === 0) throw new OutboundRefused(`${host} has no address`, false);
  // One bad address refuses the name: which one a socket would pick is not ours to guess.
  const bad = addresses.find((a) => !isPublicAddress(a.address));
  if (bad && !policy.allowPrivateAddresses) throw new OutboundRefused(`${host} resolves to a non-public address`);
}

/**
 * Checks the form of a URL a user gave: https, no credentials in it, an allowed push service (an
 * IP literal must be public). Returns it normalised (WHATWG URL), the form to send to.
 */
export function parsePushEndpoint(endpoint: string, policy: OutboundPolicy): URL {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new OutboundRefused("not a URL");
  }
  if (url.protocol !== "https:") throw new OutboundRefused("the endpoint must be https");
  if (url.username || url.password) throw new OutboundRefused("credentials in the endpoint");
  checkHost(url.hostname, policy);
  return url;
}

/** parsePushEndpoint, and the host resolves to public addresses only (what a registration is told). */
export async function checkPushEndpoint(endpoint: string, policy: OutboundPolicy, resolve: Resolver = systemResolver): Promise<URL> {
  const url = parsePushEndpoint(endpoint, policy);
  const literal = normalHost(url.hostname);
  if (!isIP(literal)) {
    let addresses: LookupAddress[];
    try {
      addresses = await resolve(literal);
    } catch {
      throw new OutboundRefused(`${literal} does not resolve`, false);
    }
    checkAddresses(literal, addresses, policy);
  }
  return url;
}

/** A socket lookup that resolves, checks every address, and hands the socket only checked ones. */
export function guardedLookup(policy: OutboundPolicy, resolve: Resolver = systemResolver): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then((all) => {
      checkAddresses(hostname, all, policy);
      const wanted = options.family === 4 || options.family === 6 ? all.filter((a) => a.family === options.family) : all;
      if (wanted.length === 0) throw new OutboundRefused(`${hostname} has no IPv${options.family} address`, false);
      if (options.all) callback(null, wanted);
      else callback(null, wanted[0]!.address, wanted[0]!.family);
    }).catch((err: NodeJS.ErrnoException) => callback(err, ""));
  };
}

/** An HTTPS agent that connects only where the policy allows, whatever URL parser the caller used. */
export class GuardedAgent extends Agent {
  constructor(private readonly policy: OutboundPolicy, options: AgentOptions = {}, private readonly resolve: Resolver = systemResolver) {
    super(options);
  }

  override createConnection(options: RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const host = options.host ?? options.hostname ?? "";
    try {
      checkHost(host, this.policy);
    } catch (err) {
      callback?.(err as Error, undefined as unknown as Duplex);
      return undefined;
    }
    return super.createConnection({ ...options, lookup: guardedLookup(this.policy, this.resolve) }, callback);
  }
}
