/**
 * S0's bare Node TLS relay: no XMPP, no parsing. Connections are paired in accept order and every
 * byte one sends is written to its partner, so the generator's frames travel the same way as a
 * 1:1 message through a server — the ceiling of TLS in Node on this core. Prints its ports.
 * Usage: node echo-server.ts <cert.pem> <key.pem>   (the certificate Parley is given in the run)
 */
import { readFileSync } from "node:fs";
import { createServer as createTlsServer } from "node:tls";
import { createServer as createTcpServer, type Socket } from "node:net";
import { generateSelfSigned } from "../../src/xmpp/tls.js";

const [certFile, keyFile] = process.argv.slice(2);
const { cert, key } = certFile && keyFile
  ? { cert: readFileSync(certFile), key: readFileSync(keyFile) }
  : await generateSelfSigned("parley.test");

let waiting: Socket | undefined;
function pair(socket: Socket): void {
  socket.setNoDelay(true);
  socket.on("error", () => socket.destroy());
  if (!waiting || waiting.destroyed) { waiting = socket; return; }
  const partner = waiting;
  waiting = undefined;
  socket.on("data", (d) => partner.write(d));
  partner.on("data", (d) => socket.write(d));
  socket.on("close", () => partner.destroy());
  partner.on("close", () => socket.destroy());
}

const tlsServer = createTlsServer({ cert, key, minVersion: "TLSv1.2" }, pair);
const tcpServer = createTcpServer(pair);
await new Promise<void>((r) => tlsServer.listen(0, "127.0.0.1", 4096, r));
await new Promise<void>((r) => tcpServer.listen(0, "127.0.0.1", 4096, r));
process.stdout.write(JSON.stringify({ tls: (tlsServer.address() as { port: number }).port, tcp: (tcpServer.address() as { port: number }).port }) + "\n");
