/**
 * XMPP over TCP (RFC 6120 §4.2): one XML document per direction on a socket, STARTTLS upgrade in
 * place (§5) or TLS from the first byte (XEP-0368). Bytes go through the bounded parser
 * (../parser.ts); writes of one event-loop tick are corked into as few TLS records as possible.
 */
import { TLSSocket } from "node:tls";
import type { Socket } from "node:net";
import { StreamParser, type ParserLimits } from "../parser.js";
import { escapeXML } from "../xml.js";
import { tlsFactsOf } from "./tls-facts.js";
import { NS_STREAMS, type FrameReceiver, type StreamOpen, type TlsFacts, type Transport } from "./transport.js";

const STREAM_CLOSE = "</stream:stream>";
/** RFC 6120 §4.4: how long we wait for the peer's closing tag after sending ours. */
const CLOSE_WAIT_MS = 2000;

/**
 * Wraps the plain socket in TLS for STARTTLS (RFC 6120 §5.4.3.3): the server side for c2s and
 * incoming s2s, the client side for outgoing s2s. Who trusts what is the caller's policy.
 */
export type TlsUpgrade = (plain: Socket) => TLSSocket;

/** Until a stream takes the transport (synchronously after construction, before any input). */
const UNATTENDED: FrameReceiver = { streamStart() {}, element() {}, streamEnd() {}, error() {}, ended() {}, drain() {} };

export class TcpTransport implements Transport {
  readonly kind = "tcp";
  readonly remoteAddress: string;
  lastInbound = Date.now();
  private socket: Socket;
  private parser: StreamParser;
  private receiver: FrameReceiver;
  private corked = false;
  private peerClosedStream = false;
  private endReported = false;

  /** `upgrade` is what STARTTLS needs, on a plain connection; a direct-TLS socket has none. */
  constructor(socket: Socket, limits: ParserLimits, private readonly upgrade: TlsUpgrade | undefined) {
    this.socket = socket;
    this.remoteAddress = normalizeAddress(socket.remoteAddress);
    this.receiver = UNATTENDED;
    this.parser = this.newParser(limits);
    this.attach(socket);
  }

  get secure(): boolean {
    return this.socket instanceof TLSSocket;
  }

  get tls(): TlsFacts | undefined {
    return this.socket instanceof TLSSocket ? tlsFactsOf(this.socket) : undefined;
  }

  get buffered(): number {
    return this.socket.writableLength;
  }

  setReceiver(receiver: FrameReceiver): void {
    this.receiver = receiver;
    this.parser.retarget(this.sink());
  }

  restart(limits: ParserLimits): void {
    this.parser.stop();
    this.parser = this.newParser(limits);
  }

  setLimits(limits: ParserLimits): void {
    this.parser.setLimits(limits);
  }

  openStream(open: StreamOpen): void {
    const attrs = [`xmlns='${open.ns}'`, `xmlns:stream='${NS_STREAMS}'`];
    if (open.id) attrs.push(`id='${open.id}'`);
    for (const [prefix, uri] of Object.entries(open.namespaces ?? {})) attrs.push(`xmlns:${prefix}='${escapeXML(uri)}'`);
    if (open.from) attrs.push(`from='${escapeXML(open.from)}'`);
    if (open.to) attrs.push(`to='${escapeXML(open.to)}'`);
    if (open.version) attrs.push(`version='${open.version}'`);
    if (open.lang) attrs.push(`xml:lang='${escapeXML(open.lang)}'`);
    this.write(`<?xml version='1.0'?><stream:stream ${attrs.join(" ")}>`);
  }

  send(xml: string): void {
    this.write(xml);
  }

  sendStreamElement(name: "features" | "error", inner: string): void {
    this.write(`<stream:${name}>${inner}</stream:${name}>`);
  }

  closeStream(): void {
    this.parser.stop();
    const socket = this.socket;
    if (socket.destroyed) return;
    this.write(STREAM_CLOSE);
    socket.end();
    // RFC 6120 §4.4: once both sides have sent their closing tag the connection is done; otherwise
    // wait a little for the peer's, then drop the connection.
    if (this.peerClosedStream) socket.once("finish", () => socket.destroy());
    else setTimeout(() => socket.destroy(), CLOSE_WAIT_MS).unref();
  }

  destroy(): void {
    this.parser.stop();
    this.socket.destroy();
  }

  /**
   * RFC 6120 §5.4.3.3: whatever the client pipelined after <starttls/> is discarded with the old
   * parser; the caller restarts the stream.
   */
  startTls(): void {
    if (!this.upgrade) throw new Error("STARTTLS is not available on this transport");
    this.parser.stop();
    const plain = this.socket;
    this.detach(plain);
    plain.uncork();
    this.corked = false;
    const secure = this.upgrade(plain);
    this.socket = secure;
    // Only decrypted application data reaches 'data' on the TLS socket, so the new stream can
    // start now; waiting for 'secure' would lose a header sent in the same flight as Finished.
    this.attach(secure);
  }

  private write(data: string): void {
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) return;
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    socket.write(data);
  }

  private newParser(limits: ParserLimits): StreamParser {
    return new StreamParser(limits, this.sink());
  }

  private sink() {
    return {
      streamStart: (header: Parameters<FrameReceiver["streamStart"]>[0]) => this.receiver.streamStart(header),
      element: (element: Parameters<FrameReceiver["element"]>[0]) => this.receiver.element(element),
      streamEnd: () => { this.peerClosedStream = true; this.receiver.streamEnd(); },
      error: (error: Parameters<FrameReceiver["error"]>[0]) => this.receiver.error(error),
    };
  }

  pauseReading(): void {
    this.socket.pause();
  }

  resumeReading(): void {
    this.socket.resume();
  }

  private attach(socket: Socket): void {
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("error", this.onError);
    socket.on("close", this.onClose);
    socket.on("drain", this.onDrain);
  }

  private detach(socket: Socket): void {
    socket.off("data", this.onData);
    socket.off("end", this.onEnd);
    socket.off("error", this.onError);
    socket.off("close", this.onClose);
    socket.off("drain", this.onDrain);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.lastInbound = Date.now();
    this.parser.write(chunk);
  };

  private readonly onEnd = (): void => {
    // A truncated character at the very end is an encoding error, reported before the end.
    this.parser.end();
    this.reportEnd();
  };

  // Errors are followed by 'close'; what happened is reported there.
  private readonly onError = (): void => {};

  private readonly onClose = (): void => {
    this.reportEnd();
  };

  private readonly onDrain = (): void => {
    this.receiver.drain();
  };

  private reportEnd(): void {
    if (this.endReported) return;
    this.endReported = true;
    this.parser.stop();
    if (!this.socket.writableEnded) this.socket.end();
    this.receiver.ended(this.peerClosedStream ? "closed" : "lost");
  }
}

export function normalizeAddress(address: string | undefined): string {
  if (!address) return "unknown";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}
