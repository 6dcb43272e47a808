/**
 * The outbound policy for user-supplied push endpoints: which addresses count as public, and that
 * the HTTPS agent checks the address it actually connects to (a local HTTPS server stands for the
 * machine's own services; a fake resolver plays DNS, rebinding included).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { request, createServer, type Server } from "node:https";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { GuardedAgent, OutboundRefused, checkPushEndpoint, hostAllowed, isPublicAddress, type Resolver } from "../../src/push/outbound.js";
import { loadHostTls } from "../../src/xmpp/tls.js";

describe("outbound policy for push endpoints", () => {
  it("public unicast only: loopback, private, link-local/metadata, CGNAT, multicast, unspecified, reserved and their IPv6-mapped and NAT64 forms are not", () => {
    for (const a of ["127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "0.0.0.0",
      "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1", "::", "::1", "fe80::1", "fe80::1%eth0",
      "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe",
      "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1", "2001:db8::1", "2002:7f00:1::1", "2001::1", "::127.0.0.1", "not an address"]) {
      assert.equal(isPublicAddress(a), false, a);
    }
    for (const a of ["8.8.8.8", "142.250.74.10", "2607:f8b0:4005:80a::200e", "2a00:1450:4001:82a::200a", "::ffff:8.8.8.8", "64:ff9b::808:808"]) {
      assert.equal(isPublicAddress(a), true, a);
    }
  });

  it("allowlist: exact names and *.suffix, case and a trailing dot do not matter, a look-alike does not pass", () => {
    const allowed = ["fcm.googleapis.com", "*.notify.windows.com"];
    assert.ok(hostAllowed("FCM.googleapis.com.", allowed));
    assert.ok(hostAllowed("wns2-par02p.notify.windows.com", allowed));
    for (const h of ["notify.windows.com", "evilnotify.windows.com", "fcm.googleapis.com.evil.example", "googleapis.com"]) assert.equal(hostAllowed(h, allowed), false, h);
  });

  describe("the agent connects only to checked addresses", () => {
    let dir: string;
    let server: Server;
    let port: number;
    let connections = 0;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "parley-outbound-"));
      const tls = (await loadHostTls(["localhost"], {}, dir)).get("localhost")!;
      server = createServer({ cert: tls.cert, key: tls.key }, (_req, res) => { res.writeHead(201); res.end(); });
      server.on("connection", () => { connections++; });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      port = (server.address() as AddressInfo).port;
    });
    after(() => {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const post = (agent: GuardedAgent, hostname: string) => new Promise<number>((resolve, reject) => {
      const req = request({ hostname, port, path: "/push", method: "POST", agent }, (res) => { res.resume(); resolve(res.statusCode!); });
      req.on("error", reject);
      req.end();
    });

    it("a name resolving to loopback is refused at connect; allowed for tests, the socket goes to the address the lookup returned", async () => {
      const dns: Resolver = async () => [{ address: "127.0.0.1", family: 4 }];
      const strict = new GuardedAgent({ allowedHosts: ["push.example.test"], allowPrivateAddresses: false }, { rejectUnauthorized: false }, dns);
      await assert.rejects(post(strict, "push.example.test"), (err) => err instanceof OutboundRefused);
      await assert.rejects(post(strict, "127.0.0.1"), (err) => err instanceof OutboundRefused, "not on the allowlist");
      assert.equal(connections, 0);
      const testing = new GuardedAgent({ allowedHosts: ["push.example.test"], allowPrivateAddresses: true }, { rejectUnauthorized: false }, dns);
      assert.equal(await post(testing, "push.example.test"), 201, "push.example.test exists only in the fake resolver");
      assert.equal(connections, 1);
      strict.destroy();
      testing.destroy();
      connections = 0;
    });

    it("DNS rebinding: a name that was public when registered and resolves to loopback at send time is refused at connect", async () => {
      let answer = "93.184.216.34";
      const dns: Resolver = async () => [{ address: answer, family: 4 }];
      const policy = { allowedHosts: ["push.example.test"], allowPrivateAddresses: false };
      await checkPushEndpoint(`https://push.example.test:${port}/push`, policy, dns);
      answer = "127.0.0.1";
      const agent = new GuardedAgent(policy, { rejectUnauthorized: false }, dns);
      await assert.rejects(post(agent, "push.example.test"), (err) => err instanceof OutboundRefused);
      assert.equal(connections, 0);
      agent.destroy();
    });

    it("one non-public address among several refuses the name", async () => {
      const dns: Resolver = async () => [{ address: "93.184.216.34", family: 4 }, { address: "::1", family: 6 }];
      await assert.rejects(checkPushEndpoint("https://push.example.test/x", { allowedHosts: ["push.example.test"], allowPrivateAddresses: false }, dns),
        (err) => err instanceof OutboundRefused && err.permanent);
    });
  });
});
