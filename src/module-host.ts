/**
 * Loads modules in dependency order, validates each one's options, and gives each a context
 * through which everything it registers is tracked, so stopping the host removes all of it.
 */
import type { z } from "zod";
import { ConfigError, formatIssues } from "./config.js";
import type { ChainContinuation, Chains } from "./hooks.js";
import type { AdHocCommand, DiscoItemsProvider, Identity, Module, ModuleContext } from "./module.js";
import type { StreamFeatureProvider, StreamFeatureRegistry } from "./xmpp/stream/features.js";
import type { HookBus } from "./hooks.js";
import type { IqTarget, Router } from "./xmpp/router.js";
import type { SessionView } from "./xmpp/sessions.js";
import { LocalRoomPlacement, type RoomPlacement } from "./placement.js";
import type { Storage } from "./storage/index.js";
import type { Logger } from "./log.js";
import type { Accounts } from "./accounts.js";
import type { HttpRoutes } from "./http/server.js";
import { createHmac } from "node:crypto";
import type { BindFeatureHandler, NonzaHandler, UnauthenticatedIqHandler } from "./xmpp/c2s/extensions.js";

export interface ModuleHostDeps {
  hosts: readonly string[];
  hooks: HookBus;
  router: Router;
  sessions: SessionView;
  /** Where rooms are handled; this node alone when not given. */
  placement?: RoomPlacement;
  storage: Storage;
  accounts: Accounts;
  log: Logger;
  dataDir: string;
  /** The installation secret (dataDir/secret.key); modules get keys derived from it. */
  secret: Buffer;
  http: HttpRoutes;
  /** The public base URL of the HTTP server for a domain, once it listens. */
  publicHttpUrl(domain: string): string;
  /** Bare JIDs of the server administrators. */
  admins: ReadonlySet<string>;
}

/** Validates modules.<name> blocks without starting anything (used by check-config too). */
export function resolveModules(all: readonly Module<any>[], config: Record<string, unknown>): Array<{ module: Module<any>; options: unknown }> {
  const problems: string[] = [];
  const known = new Set(all.map((m) => m.name));
  for (const name of Object.keys(config)) if (!known.has(name)) problems.push(`modules.${name}: no such module (known: ${[...known].join(", ")})`);
  const enabled = all.filter((m) => config[m.name] !== false);
  const enabledNames = new Set(enabled.map((m) => m.name));
  const resolved: Array<{ module: Module<any>; options: unknown }> = [];
  for (const module of enabled) {
    for (const dep of module.dependsOn ?? []) {
      if (!enabledNames.has(dep)) problems.push(`modules.${module.name}: needs module '${dep}', which is disabled`);
    }
    const result = (module.options as z.ZodType).safeParse(config[module.name] ?? {});
    if (!result.success) problems.push(...formatIssues(result.error, ["modules", module.name]));
    else resolved.push({ module, options: result.data });
  }
  if (problems.length) throw new ConfigError(problems, "modules");
  return topoSort(resolved);
}

function topoSort(list: Array<{ module: Module<any>; options: unknown }>) {
  const byName = new Map(list.map((e) => [e.module.name, e]));
  const out: typeof list = [];
  const seen = new Set<string>();
  const visit = (name: string, path: string[]) => {
    if (seen.has(name)) return;
    if (path.includes(name)) throw new Error(`module dependency cycle: ${[...path, name].join(" → ")}`);
    const entry = byName.get(name)!;
    for (const dep of entry.module.dependsOn ?? []) visit(dep, [...path, name]);
    seen.add(name);
    out.push(entry);
  };
  for (const e of list) visit(e.module.name, []);
  return out;
}

export class ModuleHost {
  private readonly stops: Array<() => void | Promise<void>> = [];
  readonly features: Record<IqTarget, Set<string>> = { host: new Set(), account: new Set() };
  readonly streamFeatures: StreamFeatureRegistry = { preAuth: [] as StreamFeatureProvider[], postAuth: [] as StreamFeatureProvider[] };
  readonly unauthenticatedIq = new Map<string, UnauthenticatedIqHandler>();
  readonly nonzas = new Map<string, NonzaHandler>();
  readonly bindFeatures = new Map<string, BindFeatureHandler>();
  readonly identities: Record<IqTarget, Identity[]> = { host: [], account: [] };
  readonly itemProviders: Record<IqTarget, DiscoItemsProvider[]> = { host: [], account: [] };
  readonly commands: AdHocCommand[] = [];
  readonly loaded: Module<any>[] = [];

  private readonly placement: RoomPlacement;

  constructor(private readonly deps: ModuleHostDeps) {
    this.placement = deps.placement ?? new LocalRoomPlacement(deps.sessions, deps.router);
  }

  async start(modules: Array<{ module: Module<any>; options: unknown }>): Promise<void> {
    for (const { module, options } of modules) {
      await module.start(this.context(module, options));
      this.loaded.push(module);
      this.deps.log.debug({ module: module.name }, "module started");
    }
  }

  private context(module: Module<any>, options: unknown): ModuleContext<any> {
    const { hooks, router } = this.deps;
    const track = (stop: () => void | Promise<void>) => { this.stops.push(stop); };
    const host = this;
    return {
      name: module.name,
      options,
      hosts: this.deps.hosts,
      log: this.deps.log.child({ module: module.name }),
      storage: this.deps.storage,
      accounts: this.deps.accounts,
      sessions: this.deps.sessions,
      placement: this.placement,
      isAdmin: (jid) => this.deps.admins.has(jid.bare),
      router: {
        route: (s) => router.route(s),
        deliver: (session, s) => router.deliver(session, s),
        deliverConfirmed: (session, s) => router.deliverConfirmed(session, s),
        bounce: (s, e, o) => router.bounce(s, e, o),
        request: (iq, t) => router.request(iq, t),
        isLocalDomain: (d) => router.isLocalDomain(d),
      },
      chain: (name, handler, priority) => track(hooks.chain(name, handler, priority, module.name)),
      on: (name, handler, priority) => track(hooks.on(name, handler, priority, module.name)),
      filter: (name, handler, priority) => track(hooks.filter(name, handler, priority, module.name)),
      emit: (name, payload) => hooks.emit(name, payload),
      runChain: (<K extends keyof Chains>(name: K, payload: Chains[K], then?: ChainContinuation<unknown>) =>
        (then ? hooks.runChain(name, payload, then) : hooks.decide(name, payload))) as ModuleContext<unknown>["runChain"],
      iq: (target, type, ns, handler) => track(router.registerIq(target, type, ns, handler)),
      iqEntity: (name, claims) => track(router.addIqEntity(name, claims)),
      feature(target, ns) {
        host.features[target].add(ns);
        track(() => { host.features[target].delete(ns); });
      },
      streamFeature(stage, provider) {
        const list = stage === "pre-auth" ? host.streamFeatures.preAuth : host.streamFeatures.postAuth;
        list.push(provider);
        track(() => { list.splice(list.indexOf(provider), 1); });
      },
      interval(ms, fn) {
        const t = setInterval(fn, ms);
        t.unref();
        track(() => clearInterval(t));
      },
      onStop: track,
      advertised: (target) => [...host.features[target]].sort(),
      identity(target, identity) {
        host.identities[target].push(identity);
        track(() => { host.identities[target].splice(host.identities[target].indexOf(identity), 1); });
      },
      identities: (target) => [...host.identities[target]],
      discoItems(target, provider) {
        host.itemProviders[target].push(provider);
        track(() => { host.itemProviders[target].splice(host.itemProviders[target].indexOf(provider), 1); });
      },
      async listDiscoItems(target, request) {
        const lists = (await Promise.all(host.itemProviders[target].map((p) => p(request)))).filter((l) => l !== undefined);
        return lists.length === 0 && request.node !== undefined ? undefined : lists.flat();
      },
      command(command) {
        host.commands.push(command);
        track(() => { host.commands.splice(host.commands.indexOf(command), 1); });
      },
      commands: () => [...host.commands],
      unauthenticatedIq(ns, handler) {
        host.unauthenticatedIq.set(ns, handler);
        track(() => { host.unauthenticatedIq.delete(ns); });
      },
      dataDir: this.deps.dataDir,
      secret: (purpose) => createHmac("sha256", this.deps.secret).update(`parley module ${module.name} ${purpose}`).digest(),
      http: (prefix, handler) => track(this.deps.http.add(prefix, handler)),
      publicHttpUrl: (domain) => this.deps.publicHttpUrl(domain),
      addDomain: (domain) => track(router.addDomain(domain)),
      nonza(ns, handler) {
        host.nonzas.set(ns, handler);
        track(() => { host.nonzas.delete(ns); });
      },
      bindFeature(ns, handler) {
        host.bindFeatures.set(ns, handler);
        track(() => { host.bindFeatures.delete(ns); });
      },
    };
  }

  async stop(): Promise<void> {
    while (this.stops.length) await this.stops.pop()!();
  }
}
