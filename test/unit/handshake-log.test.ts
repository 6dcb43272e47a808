/** The rate limit on failed-handshake log lines: so many a minute, then a count of what was left out. */
import { it } from "node:test";
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { handshakeFailureLog } from "../../src/tls/handshake-log.js";
import { capturingLogger } from "../helpers/tls.js";

it("logs at most perMinute failures a minute, and the next line says how many were left out", () => {
  const { log, lines } = capturingLogger("info");
  let now = 1_000_000;
  const failed = handshakeFailureLog(log, "https", 3, () => now);
  const socket = { remoteAddress: "::ffff:192.0.2.7" } as Socket;
  const err = Object.assign(new Error("ssl3_read_bytes:tlsv1 alert unknown ca"), { code: "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA" });
  for (let i = 0; i < 10; i++) failed(err, socket);
  assert.equal(lines.length, 3);
  assert.deepEqual(lines.map((l) => [l.level, l.listener, l.remote, l.code]), Array(3).fill([30, "https", "192.0.2.7", "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA"]));
  now += 59_999;
  failed(err, socket);
  assert.equal(lines.length, 3, "still the same minute");
  now += 1;
  failed(err, socket);
  assert.equal(lines.length, 4);
  assert.equal(lines[3]!.suppressedSinceLast, 8);
  failed(err, socket);
  assert.equal(lines[4]!.suppressedSinceLast, undefined);
});
