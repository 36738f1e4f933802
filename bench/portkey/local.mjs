// Loaded with `node --import` before Portkey's gateway, for the benchmark only (bench/README.md).
//
// 1. Every server listens on 127.0.0.1: the gateway's `serve({ port })` would listen on
//    every interface.
// 2. Streams through Node's fetch: the gateway adds its x-portkey-* headers to the upstream's
//    Response, whose headers Node's fetch makes immutable, and a stream relayed as it came
//    fails with "TypeError: immutable" (Portkey-AI/gateway issues 1389 and 1550, open when
//    this was written). Each upstream response is handed over as a new Response with the
//    same status, headers and body stream, as the fix proposed there does.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "object" && args[0] !== null) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  } else if (typeof args[0] === "number") {
    args.splice(1, typeof args[1] === "string" ? 1 : 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};

const upstreamFetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
  const response = await upstreamFetch(...args);
  return new Response(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
};
