// An alert webhook of the test's own (ALERT_WEBHOOK_URL): it keeps every alert the services post,
// so a test can wait for one and check what it said.
import http from 'node:http';

export interface AlertWebhook {
  /** ALERT_WEBHOOK_URL for the services. */
  readonly url: string;
  /** Every alert posted so far, as sent (JSON). */
  readonly alerts: Record<string, unknown>[];
  close(): void;
}

export async function alertWebhook(): Promise<AlertWebhook> {
  const alerts: Record<string, unknown>[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => { body += d.toString(); });
    req.on('end', () => { alerts.push(JSON.parse(body) as Record<string, unknown>); res.writeHead(204).end(); });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/alerts`, alerts, close: () => server.close() };
}
