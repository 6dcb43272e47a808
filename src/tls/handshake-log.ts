/**
 * Failed TLS handshakes, logged at info with the reason (a client that refuses our certificate
 * shows up here as "alert bad certificate" / "certificate unknown"), at most `perMinute` a minute
 * per listener so a scanner cannot flood the log; the next line logged says how many were left out.
 */
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Logger } from "../log.js";

export interface HandshakeFailureLog {
  (err: Error & { code?: string }, socket: Socket | TLSSocket): void;
}

export function handshakeFailureLog(log: Logger, listener: string, perMinute = 10, now: () => number = Date.now): HandshakeFailureLog {
  let windowStart = -Infinity;
  let logged = 0;
  let suppressed = 0;
  return (err, socket) => {
    const t = now();
    if (t - windowStart >= 60_000) {
      windowStart = t;
      logged = 0;
    }
    if (logged >= perMinute) {
      suppressed++;
      return;
    }
    logged++;
    const servername = (socket as TLSSocket).servername;
    log.info({
      stage: "tls", listener, reason: err.message.split("\n")[0]!.replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:/, ""),
      code: err.code, remote: socket.remoteAddress?.replace(/^::ffff:/, ""),
      servername: typeof servername === "string" ? servername : undefined,
      ...(suppressed ? { suppressedSinceLast: suppressed } : {}),
    }, "TLS handshake failed");
    suppressed = 0;
  };
}
