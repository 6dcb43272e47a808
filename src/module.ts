/**
 * What a module is: a plain object with a descriptor. Everything a module registers goes through
 * its ModuleContext, so stopping the module removes all of it.
 */
import type { z } from "zod";
import type { Chains, ChainContinuation, ChainHandler, EventHandler, Events, FilterHandler, Filters, HookBus, PriorityLevel } from "./hooks.js";
import type { IqEntity, IqHandler, IqTarget, IqType, Router } from "./xmpp/router.js";
import type { SessionView } from "./xmpp/sessions.js";
import type { Storage } from "./storage/index.js";
import type { Logger } from "./log.js";
import type { Element } from "./xmpp/xml.js";
import type { Jid } from "./xmpp/jid.js";
import type { RoomPlacement } from "./placement.js";
import type { HttpHandler } from "./http/server.js";
import type { Accounts } from "./accounts.js";
import type { BindFeatureHandler, NonzaHandler, UnauthenticatedIqHandler } from "./xmpp/c2s/extensions.js";
import type { StreamFeatureProvider, StreamFeatureStage } from "./xmpp/stream/features.js";

/** A XEP-0030 identity. */
export interface Identity {
  category: string;
  type: string;
  name?: string;
}

/**
 * Lists disco#items of a target (XEP-0030 §4): for "account", `owner` is the account's bare JID.
 * Returns undefined for a node it does not serve.
 */
export type DiscoItemsProvider = (request: { owner: string; requester: Jid; node?: string }) =>
  Element[] | undefined | Promise<Element[] | undefined>;

/** What a completed command shows: a note, or a XEP-0004 form of type "result" (with an optional note). */
export type CommandOutcome = string | { note?: string; form: Element };

/** A XEP-0050 ad-hoc command with one form: shown, filled in, submitted. */
export interface AdHocCommand {
  node: string;
  name: string;
  /**
   * Who may run it: "user" means any local account (acting on itself); "admin" only the server
   * administrators of the config's `admins` (XEP-0133 §5: anyone else gets forbidden).
   */
  allowed: "user" | "admin";
  form(request: { user: Jid }): Element | Promise<Element>;
  /** Applies the submitted form. */
  submit(request: { user: Jid; form: Element }): CommandOutcome | Promise<CommandOutcome>;
}

export interface SpecRef {
  spec: string;
  version: string;
  /** What of the spec is left out, if anything. */
  note?: string;
}

export interface ModuleContext<Options> {
  readonly name: string;
  readonly options: Options;
  readonly hosts: readonly string[];
  readonly log: Logger;
  readonly storage: Storage;
  readonly accounts: Accounts;
  readonly sessions: SessionView;
  /** Which node handles each group chat room (always this one, unless on a cluster: docs/CLUSTER.md, "Rooms"). */
  readonly placement: RoomPlacement;
  /** Whether this JID's account is one of the server administrators (config `admins`). */
  isAdmin(jid: Jid): boolean;
  readonly router: Pick<Router, "route" | "deliver" | "deliverConfirmed" | "bounce" | "request" | "isLocalDomain">;
  /** Handlers run by Priority (hooks.ts), DELIVERY when none is given. */
  chain<K extends keyof Chains>(name: K, handler: ChainHandler<K>, priority?: PriorityLevel): void;
  on<K extends keyof Events>(name: K, handler: EventHandler<K>, priority?: PriorityLevel): void;
  filter<K extends keyof Filters>(name: K, handler: FilterHandler<K>, priority?: PriorityLevel): void;
  emit: HookBus["emit"];
  /**
   * Runs a chain (for modules that define a delivery stage of their own, like message/offline):
   * its decision, or — with a continuation — what the continuation makes of it, synchronously
   * when every handler is (HookBus.runChain).
   */
  runChain<K extends keyof Chains>(name: K, payload: Chains[K]): Promise<boolean>;
  runChain<K extends keyof Chains, R>(name: K, payload: Chains[K], then: ChainContinuation<R>): R | Promise<Awaited<R>>;
  /** An IQ handler; errors follow the central rules (StanzaError → that error, else internal-server-error). */
  iq(target: IqEntity, type: IqType, ns: string, handler: IqHandler): void;
  /**
   * Declares an entity this module answers IQs for (a service domain, the rooms on it): IQs to
   * the addresses `claims` accepts go to the handlers registered with `iq(name, …)`, under the
   * same rules as the server's and accounts' (docs/MODULES.md, "IQs").
   */
  iqEntity(name: string, claims: (to: Jid) => boolean): void;
  /** A disco#info feature advertised by the server (target host) or by every account (target account). */
  feature(target: IqTarget, ns: string): void;
  streamFeature(stage: StreamFeatureStage, provider: StreamFeatureProvider): void;
  /** What disco#info advertises for a target: exactly the features loaded modules registered. */
  advertised(target: IqTarget): readonly string[];
  /** An identity disco#info shows for a target, besides the disco module's own. */
  identity(target: IqTarget, identity: Identity): void;
  identities(target: IqTarget): readonly Identity[];
  /** Contributes to disco#items of a target. */
  discoItems(target: IqTarget, provider: DiscoItemsProvider): void;
  /** undefined when no module serves the requested node. */
  listDiscoItems(target: IqTarget, request: Parameters<DiscoItemsProvider>[0]): Promise<Element[] | undefined>;
  /** Offers a XEP-0050 command on the server. */
  command(command: AdHocCommand): void;
  commands(): readonly AdHocCommand[];
  /** An IQ a client may send after TLS but before authenticating (XEP-0077 in-band registration). */
  unauthenticatedIq(ns: string, handler: UnauthenticatedIqHandler): void;
  /** Where the server keeps its files. */
  readonly dataDir: string;
  /** A key for this module and purpose, stable across restarts (derived from the installation secret). */
  secret(purpose: string): Buffer;
  /** Serves HTTP requests under a path prefix on the embedded HTTP(S) server. */
  http(prefix: string, handler: HttpHandler): void;
  /** Base URL (no trailing slash) clients reach the HTTP server at, for a domain. */
  publicHttpUrl(domain: string): string;
  /** Serves a component domain (upload.<host>, …) from this process. */
  addDomain(domain: string): void;
  /** Top-level elements of this namespace from bound sessions (XEP-0352 <active/>, …). */
  nonza(ns: string, handler: NonzaHandler): void;
  /** A feature a XEP-0386 Bind 2 request may enable inline (carbons, CSI, …); advertised as such. */
  bindFeature(ns: string, handler: BindFeatureHandler): void;
  /** A timer cleared when the module stops. */
  interval(ms: number, fn: () => void): void;
  /** Run when the module stops, in reverse registration order. */
  onStop(fn: () => void | Promise<void>): void;
}

export interface Module<Options = unknown> {
  readonly name: string;
  readonly implements: readonly SpecRef[];
  readonly dependsOn?: readonly string[];
  /** Validates this module's block of the config (modules.<name>); defaults live here. */
  readonly options: z.ZodType<Options>;
  start(ctx: ModuleContext<Options>): void | Promise<void>;
}

/** Identity helper so a module literal is checked against Module<O> with O inferred from its schema. */
export function defineModule<S extends z.ZodType>(module: Module<z.output<S>> & { options: S }): Module<z.output<S>> {
  return module;
}
