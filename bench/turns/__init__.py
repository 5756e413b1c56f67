"""Fast turns (issue 9): our bot against the canonical botbuilder echo bot and a bare aiohttp handler.

Every piece runs in its own process, on 127.0.0.1 only:

* `connector`  a fake Bot Connector (aiohttp): records when each reply arrived, counts TCP connections;
* `identity`   the fake Bot Framework / Entra identity of `tests.fakes.identity` (OpenID metadata, JWKS, an
               https client-credentials token endpoint), plus an ADFS-shaped authority for the echo bot and a
               `/_bench/mint` route that hands the load generator a signed channel token;
* `echo_bot`   the canonical botbuilder 4.17 echo bot (CloudAdapter, ConfigurationBotFrameworkAuthentication,
               ActivityHandler with one text reply), authentication on;
* `bare`       a bare aiohttp handler: parse the activity, post one reply (pooled session, cached token);
* our bot      `python -m bot serve`, authentication on, on TinyDB and on PostgreSQL;
* `loadgen`    N concurrent conversations posting Teams-shaped activities, JSON summary last;
* `run`        all of the above in one go, interleaved, with the ratios against the targets;
* `budget`     the CPU cost of each piece of one turn, in one process, without load;
* `profile`    py-spy on our bot under the same load, with the top frames (py-spy is not a dependency);
* `prototypes.patch`  the measurement hacks behind docs/performance.md's experiments (never to be merged).

See docs/performance.md for the method and the figures.
"""
