// Preloaded into the Agents Playground (`node --require ./loopback.cjs`): every TCP server it opens without a
// host listens on 127.0.0.1 only. The Playground calls `server.listen(port, callback)`, which Node binds to every
// interface, and it has no option for the address (0.2.28). Servers that name a host keep it.
"use strict";
const net = require("node:net");

const HOST = process.env.PLAYGROUND_HOST || "127.0.0.1";
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
    const first = args[0];
    if (first !== null && typeof first === "object" && !Array.isArray(first)) {
        // listen({port, host, ...}): a path (unix socket) or a handle is left alone
        if (first.path === undefined && first.handle === undefined && first._handle === undefined
            && first.fd === undefined && first.host === undefined) {
            args[0] = { ...first, host: HOST };
        }
    } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))
               || first === undefined || first === null) {
        // listen(port[, host][, backlog][, callback]): insert the host when none was given
        if (typeof args[1] !== "string") args = [first ?? 0, HOST, ...args.slice(1)];
    }
    return listen.apply(this, args);
};
