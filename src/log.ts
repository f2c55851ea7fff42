// Structured JSON logs (pino). LOG_PRETTY=true renders them readable for `npm start`.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(name: string, level: string, pretty = false): Logger {
  return pino({
    name,
    level,
    base: { service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
  });
}
