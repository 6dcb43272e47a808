/**
 * Fault 4 (issue 3; HARDENING §5): kill -9 of the server process during steady traffic, on SQLite
 * and on Postgres. After a restart, every message the server had acknowledged to its sender
 * (XEP-0198 <a h/>) reaches the recipient: lost == 0. Duplicates are allowed and counted.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { Sender, check, deliveries } from "../helpers/traffic.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";

const SM = "urn:xmpp:sm:3";
const BIN = join(process.cwd(), "bin", "parley");

async function startChild(config: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(BIN, ["start", "--config", config], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const port = await new Promise<number>((resolve, reject) => {
    // A child that did not come up in time is killed, so it cannot keep the test runner waiting.
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`server did not start: ${out}`)); }, 60_000);
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /"port":(\d+),"directTls":true/.exec(out);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  return { child, port };
}

async function smSession(port: number, user: string, resource: string): Promise<RawClient> {
  const c = await rawSession(port, user, "pw", resource);
  c.send(`<enable xmlns='${SM}'/>`);
  await c.waitForElement((e) => e.is("enabled", SM));
  return c;
}

/**
 * Acknowledges what it received every 100 ms, as a mobile client does, but never more than
 * `upTo` stanzas: after that it keeps receiving without acknowledging (a phone that froze), which
 * is the window a crash must not lose. Returns a function that stops it and reports how many
 * stanzas the last acknowledgement covered.
 */
function autoAck(c: RawClient, upTo: number): () => number {
  let lastH = 0;
  const timer = setInterval(() => {
    lastH = Math.min(upTo, c.elements.filter((e) => e.is("message") || e.is("presence") || e.is("iq")).length - 1); // minus the bind result
    c.send(`<a xmlns='${SM}' h='${lastH}'/>`);
  }, 100);
  return () => { clearInterval(timer); return lastH; };
}

const pgMissing = await postgresUnavailable();
if (pgMissing) console.log(`# SKIPPED fault 4 on postgres: no database reachable (${pgMissing})`);

for (const driver of ["sqlite", "postgres"] as const) {
  describe(`fault 4: kill -9 during traffic (${driver})`, { skip: driver === "postgres" && pgMissing ? `Postgres unreachable: ${pgMissing}` : false }, () => {
    it("every message the server acknowledged is delivered after the restart", async () => {
      const dir = mkdtempSync(join(tmpdir(), "parley-crash-"));
      const schema = `parley_crash_${randomBytes(5).toString("hex")}`;
      const config = join(dir, "parley.yaml");
      const storage = driver === "sqlite" ? "{ driver: sqlite }" : `{ driver: postgres, url: "${PG_URL}", schema: ${schema}, poolSize: 4 }`;
      writeFileSync(config, `hosts: [localhost]\ndataDir: ${dir}\nlisten: { address: 127.0.0.1, s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null }\nauth: { scramIterations: 4096 }\nlog: { level: info, pretty: false }\nstorage: ${storage}\n`);
      for (const u of ["s4", "r4"]) {
        const r = spawnSync(BIN, ["user", "add", `${u}@localhost`, "--config", config], { input: "pw\n", encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
      }
      let server = await startChild(config);
      try {
        const receiver = await smSession(server.port, "r4", "phone");
        receiver.send("<presence/>");
        const stopAck = autoAck(receiver, 101);
        const sender = new Sender(await smSession(server.port, "s4", "x"), "f4");
        for (let n = 0; n < 250; n++) {
          sender.send("r4@localhost", n);
          if (n % 20 === 19) sender.client.send(`<r xmlns='${SM}'/>`);
          await new Promise((r) => setTimeout(r, 2));
        }
        // Crash once the server has acknowledged well past what the receiver acknowledged (the
        // window at stake), while messages are still in flight.
        for (let i = 0; i < 300 && sender.acked < 150; i++) {
          sender.client.send(`<r xmlns='${SM}'/>`);
          await new Promise((r) => setTimeout(r, 50));
        }
        for (let n = 250; n < 260; n++) sender.send("r4@localhost", n);
        server.child.kill("SIGKILL");
        await new Promise((r) => server.child.once("exit", r));
        // What the receiver acknowledged before the crash counts as delivered (its presence
        // reflection came first); what it had received but not acknowledged does not — a phone
        // that died with the server would never have shown it.
        const ackedByReceiver = stopAck() - 1;
        const handledBeforeCrash = deliveries([receiver.elements], "f4").slice(0, Math.max(0, ackedByReceiver));
        receiver.close();
        sender.client.close();
        const ackedAtCrash = sender.acked;

        server = await startChild(config);
        const again = await smSession(server.port, "r4", "laptop");
        again.send("<presence/>");
        // Wait until the flush is complete: no new message for 1 s.
        let last = -1;
        while (last !== again.elements.length) {
          last = again.elements.length;
          await new Promise((r) => setTimeout(r, 1000));
        }
        const afterRestart = deliveries([again.elements], "f4");
        const figures = check(sender, [...handledBeforeCrash, ...afterRestart]);
        console.log(`# fault 4 kill -9 (${driver}): ${JSON.stringify({ ...figures, ackedAtCrash, acknowledgedByReceiverBeforeCrash: handledBeforeCrash.length, deliveredAfterRestart: afterRestart.length })}`);
        assert.ok(ackedAtCrash > 50, `traffic was flowing and acknowledged before the crash (acked ${ackedAtCrash})`);
        assert.ok(ackedAtCrash > handledBeforeCrash.length, "the crash hit acknowledged messages the receiver had not acknowledged");
        assert.equal(figures.lost, 0);
        again.close();
      } finally {
        server.child.kill("SIGKILL");
        rmSync(dir, { recursive: true, force: true });
        if (driver === "postgres") {
          const c = new pg.Client({ connectionString: PG_URL });
          await c.connect();
          await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
          await c.end();
        }
      }
    });
  });
}
