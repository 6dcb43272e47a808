/** The authentication throttle's policy, on a fake clock (the end-to-end case is test/e2e/auth-throttle.test.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AuthThrottle } from "../../src/xmpp/c2s/throttle.js";

describe("auth throttle", () => {
  it("policy: the account's count spans addresses, doubles up to the cap, bans no address, spares addresses that logged in, and is forgotten after the window", () => {
    let now = 1_000_000;
    const t = new AuthThrottle({ banAfter: 20, banSeconds: 3600, freeFailures: 2, maxDelayMs: 5000, accountFreeFailures: 5, accountMaxDelayMs: 30_000 }, () => now);
    t.succeed("10.0.0.1", "alice@example.org");
    const delays = Array.from({ length: 12 }, (_, i) => t.fail(`192.0.2.${i}`, "alice@example.org"));
    assert.deepEqual(delays, [0, 0, 0, 0, 0, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
    assert.equal(t.fail("198.51.100.1", "bob@example.org"), 0, "another account is not slowed");
    assert.equal(t.fail("10.0.0.1", "alice@example.org"), 0, "the owner's own address is not slowed by the attack");
    for (let i = 0; i < 12; i++) assert.equal(t.isBanned(`192.0.2.${i}`), false, "one failure per address: no address ban");
    assert.equal(t.fail("203.0.113.9", "nobody@example.org") + t.fail("203.0.113.9", "nobody@example.org"), 0, "unknown accounts count like real ones");
    now += 3600_000 + 1;
    assert.equal(t.fail("192.0.2.99", "alice@example.org"), 0, "forgotten after the window");
  });

  it("a failure that arrives while the last one from its address is still held back (pipelined, or a parallel stream) is answered at once", () => {
    let now = 0;
    const t = new AuthThrottle({ banAfter: 20, banSeconds: 3600, freeFailures: 2, maxDelayMs: 5000, accountFreeFailures: 0 }, () => now);
    assert.equal(t.fail("192.0.2.1", "alice@example.org"), 1000, "the account is hot: the answer waits");
    now += 10;
    assert.deepEqual([t.fail("192.0.2.1", "alice@example.org"), t.fail("192.0.2.1", "alice@example.org")], [0, 0],
      "no delay to hide behind: the per-stream limit closes the stream");
    now += 1000;
    assert.equal(t.fail("192.0.2.1", "alice@example.org"), 8000, "a client that waited is slowed again (its 4th failure on the account)");
  });
});
