// Serving /metrics in the Prometheus text format, from a process or from a node:cluster primary.
//
// Every process keeps its metrics on prom-client's default registry (registry.ts). A process that is
// its own server calls exposeProcessMetrics(). When coupon-api runs as several node:cluster workers
// on one port, one scrape must still see them all: the primary serves
// `serveMetrics(host, port, new AggregatorRegistry())`, whose clusterMetrics() asks every worker for
// its registry over the cluster IPC channel and merges them (each metric's `aggregator`), and
// exposeProcessMetrics() in a worker only arms the worker's side of that exchange.
import cluster from 'node:cluster';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, collectDefaultMetrics, register, type PrometheusContentType, type Registry } from 'prom-client';

export interface MetricsServer { readonly port: number; close(): Promise<void> }

/** prom-client's process and Node.js metrics (CPU, memory, event loop lag, GC), once per process. */
export function startDefaultMetrics(): void {
  if (!register.getSingleMetric('process_cpu_user_seconds_total')) collectDefaultMetrics();
}

/**
 * Serves `source` on http://host:port/metrics (port 0 picks a free one). An AggregatorRegistry
 * answers for all cluster workers; any other registry for this process.
 */
export async function serveMetrics(host: string, port: number, source: Registry | AggregatorRegistry<PrometheusContentType> = register): Promise<MetricsServer> {
  const read = source instanceof AggregatorRegistry ? () => source.clusterMetrics() : () => source.metrics();
  const server = http.createServer({ headersTimeout: 5_000, requestTimeout: 10_000 }, (req, res) => {
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/metrics') { res.writeHead(404).end(); return; }
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.writeHead(405, { allow: 'GET, HEAD' }).end(); return; }
    read().then(
      (text) => res.writeHead(200, { 'content-type': source.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`# metrics unavailable: ${(err as Error).message}\n`),
    );
  });
  // Scrapers are few; this keeps a stray client from holding sockets open.
  server.maxConnections = 64;
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`cannot serve metrics on ${host}:${port}: ${err.code ?? err.message}`, { cause: err })));
    server.listen(port, host, resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

/**
 * This process's metrics on host:port, with the default metrics. In a node:cluster worker nothing
 * listens (undefined): the worker answers its primary, which serves the merged view.
 */
export async function exposeProcessMetrics(host: string, port: number): Promise<MetricsServer | undefined> {
  startDefaultMetrics();
  if (cluster.isWorker) {
    // Constructing one is what installs the worker's listener for the primary's requests.
    new AggregatorRegistry<PrometheusContentType>();
    return undefined;
  }
  return serveMetrics(host, port);
}

/** For the node:cluster primary: every worker's metrics, merged, on host:port. */
export function serveClusterMetrics(host: string, port: number): Promise<MetricsServer> {
  return serveMetrics(host, port, new AggregatorRegistry<PrometheusContentType>());
}
