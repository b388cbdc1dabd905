"""Runtime load-generation layer: the client side of `ttgen bench` (open-loop schedules, latency histograms,
lean protocol connections and the load process). The cluster never imports it."""
