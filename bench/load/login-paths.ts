/**
 * S7 — the ways of logging in (issue 18), one login at a time, then S2's login storm with a
 * password and with FAST on the same server:
 *
 *   classic      STARTTLS, SASL (--sasl), restart, bind, roster, stream management, presence
 *   classic-direct   the same on the direct TLS port (XEP-0368), as S2's classic storm logs in
 *   sasl2        direct TLS, SASL2 with the password + Bind 2 (SM enabled inline), roster, presence
 *   fast-bind2   direct TLS, SASL2 with a FAST token + Bind 2, roster, presence (no session to resume)
 *   fast-resume  direct TLS, SASL2 with a FAST token + inline resumption of the session the phone
 *                lost its network on; nothing else
 *   fast-bind2-tls-resumed, fast-resume-tls-resumed   the two FAST paths with TLS resumption (a PSK
 *                from the server's last ticket), as a phone's TLS stack reconnects
 *   tls-full, tls-resumed   a direct TLS handshake and nothing else (then close_notify): what TLS
 *                and the connection cost the server, to split each login into TLS and XMPP
 *
 * Each login finds one message waiting for it, written by another client (and acked by the server,
 * XEP-0198) just before: in the offline store for a new session, in the hibernated session for a
 * resumption. Per path: the round trips (client writes that waited for an answer, counting initial
 * presence, which the waiting message answers), ms from TCP connect to that message, and the
 * server's CPU (/proc/<pid>/task/<tid>/schedstat, ns; see cpuSecondsOf) summed over each part of
 * every cycle: the waiting message, the login, the logout (with 20 ms of quiet after it), and over
 * whole cycles; and the generator's own CPU per login. Paths a server does not offer are skipped,
 * saying so. --paths picks some, --no-storms leaves out the two S2 storms.
 */
import { cpuSecondsOf, ownCpuSeconds, userSystemSecondsOf } from "./proc.js";
import type { Target } from "./targets.js";
import { Connection, MARK, modernLoginOffer, newDevice, XmppError, type Device, type Endpoint, type LoginMode } from "./xmpp.js";
import { Histogram } from "./histogram.js";
import { log, Meter, passwordOf, round, sleep, users } from "./common.js";
import { accounts, s2, type ScenarioOptions, type ScenarioResult } from "./scenarios.js";

interface LoginPath {
  name: string;
  /** How it logs in; "tls" is a TLS handshake and nothing else (the TLS share of a login). */
  mode: LoginMode | "tls";
  /** How the previous login ends, which decides what this one finds: nothing to resume, or a session. */
  leave: "close" | "drop";
  /** Classic on the direct TLS port instead of STARTTLS (what S2 does). */
  directTls?: boolean;
  /** The device resumes its TLS session from the previous login (a PSK from the server's ticket). */
  resumeTls?: boolean;
}

export const PATHS: readonly LoginPath[] = [
  { name: "classic", mode: "classic", leave: "close" },
  { name: "classic-direct", mode: "classic", leave: "close", directTls: true },
  { name: "sasl2", mode: "sasl2", leave: "close" },
  { name: "fast-bind2", mode: "fast", leave: "close" },
  { name: "fast-resume", mode: "fast", leave: "drop" },
  { name: "fast-bind2-tls-resumed", mode: "fast", leave: "close", resumeTls: true },
  { name: "fast-resume-tls-resumed", mode: "fast", leave: "drop", resumeTls: true },
  { name: "tls-full", mode: "tls", leave: "close" },
  { name: "tls-resumed", mode: "tls", leave: "close", resumeTls: true },
];

/** The storms' ladders: FAST is expected to go several times as high as a password login. */
const CLASSIC_STORM_RATES = [50, 100, 200, 300, 400, 600, 800];
const FAST_STORM_RATES = [100, 250, 500, 1000, 1500, 2000, 3000];
const DELIVERY_TIMEOUT_MS = 5000;

async function offered(endpoint: Endpoint): Promise<ReturnType<typeof modernLoginOffer>> {
  const c = new Connection(endpoint);
  try {
    return modernLoginOffer(await c.open());
  } finally { c.destroy(); }
}

/** SASL2 needs TLS from the start (XEP-0388 comes after STARTTLS otherwise): the direct TLS port. */
const directEndpoint = (target: Target): Endpoint => (target.ports ? { ...target.endpoint, tls: "direct", port: target.ports.direct } : target.endpoint);

/** Resolves once `done()` holds, checking every 2 ms; rejects after `timeoutMs`. */
async function until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) throw new XmppError(`timeout waiting for ${what}`);
    await sleep(2);
  }
}

/** One client that writes the waiting messages, each acked (XEP-0198) before the login starts. */
async function waitingMessageWriter(target: Target, name: string) {
  const sender = new Connection(target.endpoint);
  await sender.login(name, passwordOf(name), { presence: false, streamManagement: true, traffic: true });
  let sent = 0;
  let acked = 0;
  sender.onAck = (h) => { acked = h; };
  return {
    async write(to: string, marker: number): Promise<void> {
      sender.send(`<message to='${to}' type='chat' id='w${++sent}'>${MARK}${marker}</body></message>`);
      sender.requestAck();
      await until(() => acked >= sent, DELIVERY_TIMEOUT_MS, "the server's ack of the waiting message");
    },
    close: () => sender.close(),
  };
}

async function measurePath(target: Target, path: LoginPath, user: string, logins: number, writer: Awaited<ReturnType<typeof waitingMessageWriter>>) {
  const starttls = path.mode === "classic" && !path.directTls && target.ports;
  const endpoint: Endpoint = starttls ? { ...target.endpoint, tls: "starttls", port: target.ports!.starttls } : directEndpoint(target);
  const bare = `${user}@${target.endpoint.domain}`;
  const device: Device = newDevice();
  const times = new Histogram();
  const roundTrips = new Set<number>();
  const outcomes = { resumed: 0, bound: 0 };
  const cpu = { login: 0, logout: 0, waitingMessage: 0, generatorLogin: 0 };
  let tlsResumed = 0;
  let failures = 0;
  let firstError: string | undefined;
  let previousJid: string | undefined;
  let meter: Meter | undefined;
  let ticksBefore: { user: number; system: number } | undefined;
  const serverCpu = () => (target.pid ? cpuSecondsOf(target.pid) : NaN);
  // Login 0 is unmeasured: it gets the FAST token, the session to resume, the TLS ticket, the cached salted password.
  for (let i = 0; i <= logins; i++) {
    if (i === 1) {
      meter = new Meter(target.pid);
      if (target.pid) ticksBefore = userSystemSecondsOf(target.pid);
    }
    const c = new Connection(endpoint);
    const marker = performance.now();
    const to = path.leave === "drop" && previousJid ? previousJid : bare;
    const measured = i > 0;
    try {
      let delivered = false;
      let login: () => Promise<"resumed" | "bound" | undefined>;
      if (path.mode === "tls") {
        login = () => c.handshakeOnly(device, path.resumeTls === true).then(() => undefined);
      } else {
        const beforeWrite = serverCpu();
        await writer.write(to, marker);
        if (measured) cpu.waitingMessage += serverCpu() - beforeWrite;
        c.onMark = (at) => { if (at === marker) delivered = true; };
        const mode = path.mode;
        login = async () => {
          const outcome = await c.loginWith(mode, user, passwordOf(user), device, { resource: "path", streamManagement: true, traffic: true, resumeTls: path.resumeTls });
          await until(() => delivered, DELIVERY_TIMEOUT_MS, "the waiting message");
          return outcome;
        };
      }
      const before = serverCpu();
      const generatorBefore = ownCpuSeconds();
      const start = performance.now();
      const outcome = await login();
      const ms = performance.now() - start;
      if (measured) {
        cpu.login += serverCpu() - before;
        cpu.generatorLogin += ownCpuSeconds() - generatorBefore;
        times.recordMs(ms);
        if (c.tlsResumed) tlsResumed++;
        if (outcome) {
          outcomes[outcome]++;
          // A new session gets the offline message only after initial presence: one more write that waits.
          roundTrips.add(c.roundTrips + (outcome === "bound" ? 1 : 0));
        }
      }
      previousJid = c.jid;
    } catch (e) {
      failures++;
      firstError ??= (e as Error).message;
      device.session = undefined;
    }
    const beforeLogout = serverCpu();
    if (path.mode === "tls") await c.endTls(); else if (path.leave === "drop") c.drop(); else await c.close();
    // The server notices the end (and hibernates or ends the session) before the next message.
    await sleep(20);
    if (measured) cpu.logout += serverCpu() - beforeLogout;
  }
  const cycles = meter!.read();
  const ticksAfter = target.pid ? userSystemSecondsOf(target.pid) : undefined;
  const kernelSeconds = ticksBefore && ticksAfter ? ticksAfter.system - ticksBefore.system : NaN;
  const userSeconds = ticksBefore && ticksAfter ? ticksAfter.user - ticksBefore.user : NaN;
  const latency = times.summary();
  const perLogin = (seconds: number) => round((seconds / Math.max(1, times.count)) * 1000, 3);
  const result = {
    path: path.name, logins, failures, firstError, outcomes, tlsResumed,
    roundTrips: [...roundTrips].sort((a, b) => a - b),
    msToFirstMessage: latency,
    serverCpuMsPerLogin: perLogin(cpu.login),
    /** `</stream:stream>` (or the dropped connection) and what the server does about it, with 20 ms of quiet. */
    serverCpuMsPerLogout: perLogin(cpu.logout),
    serverCpuMsPerWaitingMessage: perLogin(cpu.waitingMessage),
    serverCpuMsPerCycle: round((cycles.serverCpuSeconds / Math.max(1, logins)) * 1000, 3),
    /** The kernel's part of the server's CPU over the cycles (system calls, loopback TCP), from whole ticks. */
    serverSystemShare: round(kernelSeconds / (userSeconds + kernelSeconds)),
    generatorCpuMsPerLogin: perLogin(cpu.generatorLogin),
    generatorCoreShare: cycles.generatorCoreShare,
  };
  log(`S7 ${path.name}: ${result.roundTrips.join("/") || "no"} round trips, ${path.mode === "tls" ? "handshake" : "first message"} p50 ${latency.p50ms} ms p99 ${latency.p99ms} ms, server CPU ${result.serverCpuMsPerLogin} ms per login + ${result.serverCpuMsPerLogout} ms per logout (${result.serverCpuMsPerCycle} ms per cycle, ${round(result.serverSystemShare * 100, 0)} % in the kernel), generator CPU ${result.generatorCpuMsPerLogin} ms per login, ${outcomes.resumed} resumed, ${tlsResumed} TLS resumed, ${failures} failed${firstError ? ` (${firstError.slice(0, 120)})` : ""}`);
  return result;
}

export async function s7(target: Target, o: ScenarioOptions): Promise<ScenarioResult> {
  const logins = o.logins ?? 200;
  const [sender, ...names] = users(`${o.prefix}p`, PATHS.length + 1) as [string, ...string[]];
  const registered = await accounts(target, o, [sender, ...names]);
  const offer = await offered(directEndpoint(target));
  const supported = (p: LoginPath) => p.mode === "classic" || p.mode === "tls" || (p.mode === "sasl2" ? offer.sasl2 : offer.fast);
  const chosen = (p: LoginPath) => !o.paths || o.paths.includes(p.name);
  const skipped = PATHS.filter((p) => !supported(p)).map((p) => p.name);
  if (skipped.length) log(`S7: ${target.name} offers ${offer.sasl2 ? "SASL2 but not FAST HT-SHA-256-NONE" : "no SASL2 (XEP-0388)"}: skipping ${skipped.join(", ")}`);
  const writer = await waitingMessageWriter(target, sender);
  const paths: Awaited<ReturnType<typeof measurePath>>[] = [];
  for (const [i, path] of PATHS.entries()) {
    if (supported(path) && chosen(path)) paths.push(await measurePath(target, path, names[i]!, logins, writer));
  }
  await writer.close();

  // The storms, on direct TLS as S2 always runs: with the password (S2 as it is), then with FAST.
  const storm = async (login: LoginMode, rates: number[]) => o.storms === false ? undefined : s2(target, { ...o, login, users: o.users ?? 500, durationSeconds: o.durationSeconds ?? 3, rates: o.rates ?? rates, prefix: `${o.prefix}s${login}` });
  const classicStorm = await storm("classic", CLASSIC_STORM_RATES);
  const fastStorm = offer.fast ? await storm("fast", FAST_STORM_RATES) : undefined;

  const figure = (name: string, pick: (p: (typeof paths)[number]) => number) => {
    const p = paths.find((x) => x.path === name);
    return p && !p.failures ? pick(p) : NaN;
  };
  const headline: Record<string, number> = {};
  for (const path of PATHS) {
    const key = path.name.replace(/-(\w)/g, (_, c: string) => c.toUpperCase());
    if (path.mode !== "tls") headline[`${key}RoundTrips`] = figure(path.name, (p) => Math.max(...p.roundTrips));
    headline[`${key}MsToFirstMessageP50`] = figure(path.name, (p) => p.msToFirstMessage.p50ms);
    headline[`${key}ServerCpuMsPerLogin`] = figure(path.name, (p) => p.serverCpuMsPerLogin);
    headline[`${key}ServerCpuMsPerLogout`] = figure(path.name, (p) => p.serverCpuMsPerLogout);
  }
  headline.fastResumeToClassicMs = round(headline.fastResumeMsToFirstMessageP50! / headline.classicMsToFirstMessageP50!);
  headline.fastResumeToClassicCpu = round(headline.fastResumeServerCpuMsPerLogin! / headline.classicServerCpuMsPerLogin!);
  headline.s2ClassicMaxLoginsPerSecond = classicStorm?.headline.maxLoginsPerSecond ?? NaN;
  headline.s2FastMaxLoginsPerSecond = fastStorm?.headline.maxLoginsPerSecond ?? NaN;
  headline.s2FastToClassic = round(headline.s2FastMaxLoginsPerSecond / headline.s2ClassicMaxLoginsPerSecond);
  return {
    scenario: "s7", target: target.name, version: target.version, headline,
    detail: { registered, sasl: target.endpoint.sasl, certificate: target.certificate, offered: offer, skipped, paths, storms: { classic: classicStorm, fast: fastStorm } },
  };
}
