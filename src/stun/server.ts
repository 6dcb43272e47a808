/**
 * A STUN server for the Binding method only (RFC 8489, over UDP): it tells a client the address
 * and port its request came from, which is what a WebRTC client needs from STUN to call across a
 * NAT. No authentication, no TURN relaying (that is coturn's job), no RFC 5780 behaviour discovery.
 * - §6.3: a message is processed only if "the first two bits are 0, the magic cookie field has
 *   the correct value, the message length is sensible" and, when present, FINGERPRINT matches;
 *   anything else is dropped silently, as is every response and indication sent to us.
 * - §6.3.1.1: "If the request contains one or more unknown comprehension-required attributes, the
 *   server replies with an error response with an error code of 420 (Unknown Attribute) and
 *   includes an UNKNOWN-ATTRIBUTES attribute in the response".
 * - §14.2: the success response carries XOR-MAPPED-ADDRESS; IPv4-mapped IPv6 sources are answered
 *   as IPv4, as the client sent from IPv4.
 * - §14.7: FINGERPRINT, when present, "MUST be the last attribute"; responses carry one when the
 *   request did (ICE agents use it to tell STUN from media).
 * A response is at most about three times the size of the smallest request (20 bytes in, under
 * 70 out), so reflection through it amplifies little.
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { isIPv4 } from "node:net";
import type { Logger } from "../log.js";

export const MAGIC_COOKIE = 0x2112a442;
const HEADER = 20;
const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const BINDING_ERROR = 0x0111;
export const ATTR = {
  XOR_MAPPED_ADDRESS: 0x0020,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  SOFTWARE: 0x8022,
  FINGERPRINT: 0x8028,
} as const;
const FINGERPRINT_XOR = 0x5354554e;

export interface StunServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function listenStun(opts: { address: string; port: number; software: string; log: Logger }): Promise<StunServer> {
  const socket: Socket = isIPv4(opts.address) ? createSocket("udp4") : createSocket({ type: "udp6", ipv6Only: false });
  socket.on("message", (msg, from) => {
    const reply = answer(msg, from, opts.software);
    if (reply) socket.send(reply, from.port, from.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(opts.port, opts.address, () => { socket.off("error", reject); resolve(); });
  });
  socket.on("error", (err) => opts.log.warn({ stage: "stun", err: err.message }, "STUN socket error"));
  const port = socket.address().port;
  opts.log.info({ stage: "listen", port, transport: "udp" }, "STUN listening");
  return { port, close: () => new Promise<void>((resolve) => socket.close(() => resolve())) };
}

/** The response to one datagram, or undefined when it gets none. */
export function answer(msg: Buffer, from: Pick<RemoteInfo, "address" | "port">, software: string): Buffer | undefined {
  if (msg.length < HEADER || (msg[0]! & 0xc0) !== 0) return undefined;
  const type = msg.readUInt16BE(0);
  const length = msg.readUInt16BE(2);
  if (msg.readUInt32BE(4) !== MAGIC_COOKIE || length % 4 !== 0 || HEADER + length !== msg.length) return undefined;
  if (type !== BINDING_REQUEST) return undefined;
  const transaction = msg.subarray(8, 20);
  const unknown: number[] = [];
  let fingerprinted = false;
  for (let at = HEADER; at < msg.length;) {
    if (at + 4 > msg.length) return undefined;
    const attr = msg.readUInt16BE(at);
    const size = msg.readUInt16BE(at + 2);
    const next = at + 4 + Math.ceil(size / 4) * 4;
    if (next > msg.length) return undefined;
    if (attr === ATTR.FINGERPRINT) {
      if (size !== 4 || next !== msg.length) return undefined;
      if (msg.readUInt32BE(at + 4) !== fingerprintOf(msg.subarray(0, at))) return undefined;
      fingerprinted = true;
    } else if (attr < 0x8000 && !unknown.includes(attr)) {
      // Comprehension-required (0x0000–0x7FFF), and a Binding request defines none we must act on.
      unknown.push(attr);
    }
    at = next;
  }
  if (unknown.length) {
    const list = Buffer.alloc(unknown.length * 2);
    unknown.forEach((a, i) => list.writeUInt16BE(a, i * 2));
    const reason = Buffer.from("Unknown Attribute");
    const errorCode = Buffer.concat([Buffer.from([0, 0, 4, 20]), reason]);
    return encode(BINDING_ERROR, transaction, [[ATTR.ERROR_CODE, errorCode], [ATTR.UNKNOWN_ATTRIBUTES, list], [ATTR.SOFTWARE, Buffer.from(software)]], fingerprinted);
  }
  return encode(BINDING_SUCCESS, transaction, [[ATTR.XOR_MAPPED_ADDRESS, xorAddress(from.address, from.port, transaction)], [ATTR.SOFTWARE, Buffer.from(software)]], fingerprinted);
}

/** RFC 8489 §14.2: port XOR the cookie's high half; address XOR the cookie (IPv4) or cookie ‖ transaction id (IPv6). */
export function xorAddress(address: string, port: number, transaction: Buffer): Buffer {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const ip = mapped ? mapped[1]! : address;
  const cookie = Buffer.alloc(4);
  cookie.writeUInt32BE(MAGIC_COOKIE);
  const bytes = isIPv4(ip) ? Buffer.from(ip.split(".").map(Number)) : ipv6Bytes(ip);
  const mask = Buffer.concat([cookie, transaction]);
  const out = Buffer.alloc(4 + bytes.length);
  out[1] = bytes.length === 4 ? 0x01 : 0x02;
  out.writeUInt16BE(port ^ (MAGIC_COOKIE >>> 16), 2);
  for (let i = 0; i < bytes.length; i++) out[4 + i] = bytes[i]! ^ mask[i]!;
  return out;
}

function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.split("::") as [string, string | undefined];
  const groups = (s: string | undefined) => (s ? s.split(":") : []);
  const left = groups(head);
  const right = groups(tail);
  const all = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function encode(type: number, transaction: Buffer, attributes: Array<[number, Buffer]>, fingerprint: boolean): Buffer {
  const parts: Buffer[] = [];
  for (const [attr, value] of attributes) {
    const head = Buffer.alloc(4);
    head.writeUInt16BE(attr, 0);
    head.writeUInt16BE(value.length, 2);
    parts.push(head, value, Buffer.alloc((4 - (value.length % 4)) % 4));
  }
  const body = Buffer.concat(parts);
  const header = Buffer.alloc(HEADER);
  header.writeUInt16BE(type, 0);
  header.writeUInt16BE(body.length + (fingerprint ? 8 : 0), 2);
  header.writeUInt32BE(MAGIC_COOKIE, 4);
  transaction.copy(header, 8);
  const message = Buffer.concat([header, body]);
  if (!fingerprint) return message;
  // §14.7: the CRC covers the header with the length already counting FINGERPRINT.
  const attr = Buffer.alloc(8);
  attr.writeUInt16BE(ATTR.FINGERPRINT, 0);
  attr.writeUInt16BE(4, 2);
  attr.writeUInt32BE(fingerprintOf(message), 4);
  return Buffer.concat([message, attr]);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** CRC-32 (ITU V.42, as in RFC 1952 §8) XOR 0x5354554e. */
export function fingerprintOf(bytes: Buffer): number {
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  return ((crc ^ 0xffffffff) ^ FINGERPRINT_XOR) >>> 0;
}
