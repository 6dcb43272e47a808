/** X-Forwarded-For / X-Forwarded-Proto are believed only from trusted proxies (src/http/forwarded.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "node:net";
import type { IncomingMessage } from "node:http";
import { TrustedProxies } from "../../src/http/forwarded.js";

function request(peer: string, headers: Record<string, string> = {}): IncomingMessage {
  const socket = new Socket();
  Object.defineProperty(socket, "remoteAddress", { value: peer });
  return { socket, headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])) } as unknown as IncomingMessage;
}

describe("TrustedProxies", () => {
  const proxies = new TrustedProxies(["127.0.0.1", "::1", "10.0.0.0/8"]);

  it("ignores the headers from an untrusted peer", () => {
    const c = proxies.clientOf(request("203.0.113.5", { "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https" }));
    assert.deepEqual({ address: c.address, secure: c.secure, proxied: c.proxied }, { address: "203.0.113.5", secure: false, proxied: false });
  });

  it("takes the nearest address it does not trust, walking back through trusted proxies", () => {
    const c = proxies.clientOf(request("127.0.0.1", { "X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.1.2.3", "X-Forwarded-Proto": "https" }));
    // 10.1.2.3 is a trusted hop; 203.0.113.9 is not, so it is the client (198.51.100.7 is its claim).
    assert.deepEqual({ address: c.address, secure: c.secure, proxied: c.proxied, tls: c.tls }, { address: "203.0.113.9", secure: true, proxied: true, tls: undefined });
  });

  it("the last X-Forwarded-Proto counts (set by the proxy nearest to us); none means not secure", () => {
    assert.equal(proxies.clientOf(request("::ffff:127.0.0.1", { "X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https, http" })).secure, false);
    assert.equal(proxies.clientOf(request("::1", { "X-Forwarded-For": "198.51.100.7" })).secure, false);
  });

  it("a trusted peer without X-Forwarded-For is the client itself; its X-Forwarded-Proto alone is ignored", () => {
    const c = proxies.clientOf(request("127.0.0.1", { "X-Forwarded-Proto": "https" }));
    assert.deepEqual({ address: c.address, secure: c.secure, proxied: c.proxied }, { address: "127.0.0.1", secure: false, proxied: false });
  });

  it("reads hops written with ports and brackets; stops at garbage", () => {
    assert.equal(proxies.clientOf(request("127.0.0.1", { "X-Forwarded-For": "198.51.100.8:4711" })).address, "198.51.100.8");
    assert.equal(proxies.clientOf(request("127.0.0.1", { "X-Forwarded-For": "[2001:db8::5]:443" })).address, "2001:db8::5");
    assert.equal(proxies.clientOf(request("127.0.0.1", { "X-Forwarded-For": "unknown" })).address, "127.0.0.1");
  });

  it("with no trusted proxies nothing forwarded is believed", () => {
    const none = new TrustedProxies([]);
    assert.equal(none.clientOf(request("127.0.0.1", { "X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https" })).address, "127.0.0.1");
  });
});
