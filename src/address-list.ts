/**
 * IP address lists from config: single addresses or CIDR blocks, IPv4 and IPv6 — who may register
 * in-band, who may scrape /metrics without a token.
 */
import { BlockList, isIP } from "node:net";
import { z } from "zod";

/** An IP address or a CIDR block ("127.0.0.1", "10.0.0.0/8", "::1/128"). */
export const cidrSchema = z.string().refine((v) => {
  const [a, b] = v.split("/");
  const family = isIP(a ?? "");
  return family !== 0 && (b === undefined || (/^\d+$/.test(b) && Number(b) <= (family === 6 ? 128 : 32)));
}, "not an IP address or CIDR block");

export class AddressList {
  private readonly list = new BlockList();

  constructor(cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const [address, bits] = cidr.split("/") as [string, string | undefined];
      const family = isIP(address) === 6 ? "ipv6" : "ipv4";
      this.list.addSubnet(address, bits === undefined ? (family === "ipv6" ? 128 : 32) : Number(bits), family);
    }
  }

  /** false for anything that is not an IP address. IPv4-mapped IPv6 addresses count as IPv4. */
  includes(address: string): boolean {
    const plain = address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
    const family = isIP(plain);
    return family !== 0 && this.list.check(plain, family === 6 ? "ipv6" : "ipv4");
  }
}
