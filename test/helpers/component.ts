/** A raw XEP-0114 external component for tests: a TCP socket, the handshake, and text to match. */
import { connect as tcpConnect, type Socket } from "node:net";
import { createHash } from "node:crypto";

export class Component {
  text = "";
  readonly closed: Promise<void>;
  private constructor(readonly socket: Socket) {
    socket.on("data", (d: Buffer) => { this.text += d.toString("utf8"); });
    socket.on("error", () => {});
    this.closed = new Promise((r) => socket.once("close", () => r()));
  }
  static async open(port: number, domain: string): Promise<Component> {
    const socket = tcpConnect({ port, host: "127.0.0.1" });
    await new Promise<void>((r, j) => { socket.once("connect", () => r()); socket.once("error", j); });
    const c = new Component(socket);
    socket.write(`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${domain}'>`);
    return c;
  }
  async waitFor(re: RegExp, ms = 5000): Promise<RegExpMatchArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = this.text.match(re);
      if (m) return m;
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}; got ${this.text.slice(-400)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  async handshake(secret: string): Promise<void> {
    const id = (await this.waitFor(/<stream:stream[^>]* id='([^']+)'/))[1]!;
    this.socket.write(`<handshake>${createHash("sha1").update(id + secret).digest("hex")}</handshake>`);
  }
}
