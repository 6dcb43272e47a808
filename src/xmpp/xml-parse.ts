/**
 * Parse one serialized element (a stored stanza, a stored vCard) with the same restricted parser
 * the network uses (HARDENING §6.2 #8: one parser for every path).
 */
import { StreamParser } from "./parser.js";
import type { Element } from "./xml.js";
import { NS } from "./ns.js";

const LIMITS = { maxStanzaBytes: 16 * 1024 * 1024, maxDepth: 64, maxElementsPerStanza: 100_000, maxAttributes: 256, maxNameLength: 1024, maxLangLength: 35 };
const OPEN = Buffer.from(`<stream:stream xmlns='${NS.CLIENT}' xmlns:stream='${NS.STREAMS}'>`);

export function parseElement(xml: string): Element {
  let result: Element | undefined;
  let failure: Error | undefined;
  const parser = new StreamParser(LIMITS, {
    streamStart() {},
    element(e) { if (result) failure ??= new Error("more than one element"); else result = e; },
    streamEnd() {},
    error(e) { failure ??= e; },
  });
  parser.write(OPEN);
  parser.write(Buffer.from(xml));
  if (failure) throw failure;
  if (!result) throw new Error("no complete element");
  return result;
}
