// The parts of xmpp.js (which ships no types) that the tests use.
declare module "@xmpp/xml" {
  import { Element as LtxElement } from "ltx";
  export type Element = LtxElement;
  export function xml(name: string, attrs?: Record<string, string | undefined>, ...children: Array<LtxElement | string>): LtxElement;
  export namespace xml {
    /** The streaming parser xmpp.js reads the wire with: "start" (stream header), "element" (each top-level child), "end". */
    class Parser {
      on(event: "start" | "element" | "end", listener: (element: LtxElement) => void): void;
      on(event: "error", listener: (error: Error) => void): void;
      write(data: string): void;
    }
  }
}

declare module "@xmpp/client" {
  import type { Element } from "@xmpp/xml";
  export { xml } from "@xmpp/xml";
  export interface Client {
    start(): Promise<{ toString(): string }>;
    stop(): Promise<void>;
    send(element: Element): Promise<void>;
    on(event: "stanza", listener: (stanza: Element) => void): void;
    on(event: "error", listener: (error: Error) => void): void;
    reconnect: { stop(): void };
  }
  export function client(options: { service: string; domain: string; username?: string; password?: string; resource?: string; timeout?: number }): Client;
}
