// The Node request handler for connect-es's universal handlers: connect-node's adapter, minus two
// costs it pays on every call that has ended normally (found with `node --cpu-prof` under the gate
// benchmark, README "Performance"):
// - connect-node aborts an HTTP/1.1 request's signal when the response closes, also after a
//   complete answer, and connect-es aborts the call's context when the handler is done. Each
//   abort without a reason makes a DOMException (with its stack trace) and runs every 'abort'
//   listener: together about a tenth of coupon-api's CPU during a sale.
// - Here the request signal is aborted only when the client went away before the answer was
//   complete (what the abort is for), and the end of a call aborts its context with one shared
//   reason (`CALL_ENDED`) instead of a new DOMException.
// Everything else (routing by path, the fallback, reading requests, writing answers) is
// connect-node's own code, called through its exported functions.
import { EventEmitter } from 'node:events';
import type http from 'node:http';
import type http2 from 'node:http2';
import { Code, ConnectError, createConnectRouter, type ConnectRouter, type ConnectRouterOptions, type HandlerContext } from '@connectrpc/connect';
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from '@connectrpc/connect-node';
import { createAsyncIterable } from '@connectrpc/connect/protocol';
import type { Logger } from '../log.ts';
import type { ReadBody, ShortPathHandler } from './short-path.ts';

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** The compressions the router accepts and may answer with, in its order of preference. */
export const ACCEPT_COMPRESSION = [compressionGzip, compressionBrotli];

/** The reason a call's context is aborted with once the call is over (nothing failed). */
export const CALL_ENDED: Error = Object.freeze(new Error('the call ended'));

export interface NodeAdapterOptions extends ConnectRouterOptions {
  routes: (router: ConnectRouter) => void;
  /** Answers a path no route serves. */
  fallback: (req: NodeRequest, res: NodeResponse) => void;
  /** The short path for the hot methods (short-path.ts); unset: none. */
  shortPath?: ShortPathHandler | undefined;
  log: Logger;
}

/**
 * Stands in for the response where connect-node listens for 'close' to abort the request: it
 * closes only when the real response closed before it finished (the client went away).
 */
function closedEarly(res: NodeResponse): EventEmitter {
  const early = new EventEmitter();
  res.once('close', () => { if (!res.writableFinished) early.emit('close'); });
  return early;
}

export function nodeAdapter(options: NodeAdapterOptions): (req: NodeRequest, res: NodeResponse) => void {
  const gate = options.requestGate;
  const router = createConnectRouter({
    acceptCompression: ACCEPT_COMPRESSION,
    ...options,
    // Runs for every call before its handler, with the call's context: the end-of-call abort gets
    // a shared reason (connect-es calls `context.abort()` with none once the call is over).
    requestGate: (context: HandlerContext) => {
      // The context connect-es makes is its HandlerContextController (not exported): the context
      // plus the abort() it calls when the call is over.
      const controller = context as HandlerContext & { abort?: (reason?: unknown) => void };
      const abort = controller.abort?.bind(controller);
      if (abort) controller.abort = (reason?: unknown) => { abort(reason ?? CALL_ENDED); };
      return gate?.(context);
    },
  });
  options.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const viaConnect = (req: NodeRequest, res: NodeResponse, body?: ReadBody) => {
    const handler = paths.get(req.url?.split('?', 2)[0] ?? '');
    if (!handler) {
      options.fallback(req, res);
      return;
    }
    // connect-node's signature for (request, response, parsed JSON body, context values): the
    // stand-in response is only listened to for 'close'. A body the short path already read (or began to) is
    // handed over as it came.
    const read = universalRequestFromNodeRequest(req, closedEarly(res) as unknown as NodeResponse, undefined, undefined);
    const uReq = body ? { ...read, body: body instanceof Uint8Array ? createAsyncIterable([body]) : body } : read;
    handler(uReq)
      .then((uRes) => universalResponseToNodeResponse(uRes, res))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        options.log.error({ err: reason, procedure: handler.requestPath }, 'writing an answer failed');
      });
  };
  const short = options.shortPath;
  return (req, res) => {
    if (short?.(req, res, (body) => viaConnect(req, res, body))) return;
    viaConnect(req, res);
  };
}
