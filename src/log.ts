/**
 * pino JSON logs; pretty-printed when stdout is a terminal. Log the routing stage and a stanza's
 * top tag — never message bodies, passwords or credentials (the redact list is a second line of defence).
 */
import pino from "pino";

export type Logger = pino.Logger;

export interface LogOptions {
  level: string;
  pretty?: boolean;
}

export function createLogger(options: LogOptions): Logger {
  const pretty = options.pretty ?? Boolean(process.stdout.isTTY);
  return pino({
    level: options.level,
    base: { app: "parley" },
    redact: { paths: ["password", "*.password", "credentials", "*.credentials", "body", "*.body"], censor: "[redacted]" },
    ...(pretty ? { transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l" } } } : {}),
  });
}

export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
