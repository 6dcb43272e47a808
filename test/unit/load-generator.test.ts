/** The benchmark generator's own arithmetic and stream scanning: wrong here means wrong figures. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Histogram } from "../../bench/load/histogram.js";
import { Connection, MARK } from "../../bench/load/xmpp.js";
import { commandAccounts, ladder } from "../../bench/load/common.js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

describe("load generator histogram", () => {
  it("percentiles within 1 % of the exact values, never below them", () => {
    const h = new Histogram();
    for (let ms = 1; ms <= 1000; ms++) h.recordMs(ms);
    const s = h.summary();
    assert.equal(s.count, 1000);
    for (const [reported, exact] of [[s.p50ms, 500], [s.p99ms, 990], [s.p999ms, 999]] as const) {
      assert.ok(reported >= exact && reported <= exact * 1.011, `${reported} vs ${exact}`);
    }
    assert.equal(s.maxms, 1000);
  });

  it("an empty histogram reports no percentile rather than zero", () => {
    assert.ok(Number.isNaN(new Histogram().percentileMs(99)));
  });
});

describe("load generator stream scanning", () => {
  const feedable = () => {
    const c = new Connection({ host: "127.0.0.1", port: 0, domain: "example.org", tls: "direct", sasl: "plain" });
    const marks: number[] = [];
    const written: string[] = [];
    c.onMark = (t) => marks.push(t);
    (c as unknown as { socket: { write(s: string): void } }).socket = { write: (s: string) => { written.push(s); } };
    c.startTraffic();
    const feed = (text: string) => (c as unknown as { onData(t: string): void }).onData(text);
    return { marks, written, feed, connection: c };
  };
  const message = (t: number) => `<message from='a@example.org/x' type='chat'>${MARK}${t}</body></message>`;

  it("counts every marker once whatever the chunk boundaries", () => {
    const stream = Array.from({ length: 50 }, (_, i) => message(1000 + i)).join("") +
      "<iq type='get' id='p1' from='example.org'><ping xmlns='urn:xmpp:ping'/></iq>";
    for (const size of [1, 3, 7, 64, 200, stream.length]) {
      const { marks, written, feed } = feedable();
      for (let at = 0; at < stream.length; at += size) feed(stream.slice(at, at + size));
      assert.deepEqual(marks, Array.from({ length: 50 }, (_, i) => 1000 + i), `chunks of ${size}`);
      assert.deepEqual(written, ["<iq type='result' id='p1' to='example.org'/>"], `chunks of ${size}`);
    }
  });

  it("counts every stanza once for XEP-0198 `h` whatever the chunk boundaries, from where counting started", () => {
    const stream = Array.from({ length: 50 }, (_, i) => message(1000 + i)).join("") + "<r xmlns='urn:xmpp:sm:3'/>";
    for (const size of [1, 3, 7, 64, 200, stream.length]) {
      const { written, feed, connection } = feedable();
      // As after an inline resumption with h='7': the count goes on from there.
      (connection as unknown as { countInboundFrom(h: number): void }).countInboundFrom(7);
      for (let at = 0; at < stream.length; at += size) feed(stream.slice(at, at + size));
      assert.deepEqual(written, ["<a xmlns='urn:xmpp:sm:3' h='57'/>"], `chunks of ${size}`);
    }
  });
});

describe("load generator account hook", () => {
  it("runs the command once per account with user, domain and password filled in and quoted", async () => {
    const dir = mkdtempSync(join(tmpdir(), "load-accounts-"));
    const file = join(dir, "created");
    try {
      const r = await commandAccounts(`printf '%s|%s|%s\\n' {user} {domain} {password} >> ${file}`, "it's.example", ["a1", "a2"]);
      assert.equal(r.created, 2);
      assert.deepEqual(readFileSync(file, "utf8").trim().split("\n").sort(), ["a1|it's.example|pw-a1", "a2|it's.example|pw-a2"]);
      await assert.rejects(commandAccounts("exit 3", "example.org", ["a3"]), /1 account commands failed/);
    } finally { rmSync(dir, { recursive: true, force: true }); }
  });
});

describe("load generator rate ladder", () => {
  it("repeats a failed step once, stops at a rate that fails every attempt, returns every attempt", async () => {
    const outcomes: Record<string, boolean> = { "1/1": true, "2/1": false, "2/2": true, "3/1": false, "3/2": false, "4/1": true };
    const run = (attempts: number) => ladder([1, 2, 3, 4], attempts, 0, async (rate, attempt) => ({ step: `${rate}/${attempt}`, passed: outcomes[`${rate}/${attempt}`]! }));
    assert.deepEqual((await run(2)).map((r) => r.step), ["1/1", "2/1", "2/2", "3/1", "3/2"]);
    assert.deepEqual((await run(1)).map((r) => r.step), ["1/1", "2/1"]);
  });
});

describe("load generator arguments", () => {
  it("--archive seeds the SQLite target for the accounts the scenario logs in as, and takes only a count ≥ 1", async () => {
    const { parseArgs } = await import("../../bench/load/run.js");
    assert.deepEqual(parseArgs(["s3", "--archive", "5000", "--prefix", "big"]).target.archive, { records: 5000, prefix: "big" });
    assert.equal(parseArgs(["s3"]).target.archive, undefined);
    for (const bad of ["0", "1.5", "many"]) assert.throws(() => parseArgs(["s3", "--archive", bad]), /--archive/);
  });
});
