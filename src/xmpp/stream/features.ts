/**
 * Stream features (RFC 6120 §4.3.2): what a stream offers at each stage of negotiation. The
 * built-in negotiation steps and the modules declare theirs through this one interface, so what
 * the server advertises is exactly what is loaded.
 */
import type { Element } from "../xml.js";
import type { TransportKind } from "./transport.js";

export type StreamFeatureStage = "pre-auth" | "post-auth";

export interface StreamFeatureContext {
  secure: boolean;
  remoteAddress: string;
  transport: TransportKind;
}

/** One feature element, or undefined when it is not offered on this stream. */
export type StreamFeatureProvider = (info: StreamFeatureContext) => Element | undefined;

export interface StreamFeatureRegistry {
  readonly preAuth: StreamFeatureProvider[];
  readonly postAuth: StreamFeatureProvider[];
}

/** The serialized features the providers offer on this stream. */
export function offerFeatures(providers: readonly StreamFeatureProvider[], info: StreamFeatureContext): string {
  let out = "";
  for (const provide of providers) {
    const feature = provide(info);
    if (feature) out += feature.toString();
  }
  return out;
}
