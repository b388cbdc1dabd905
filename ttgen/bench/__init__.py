"""CLI layer: `ttgen bench`, the cluster load benchmark (plan, cluster, load processes, report). The load
processes run runtime.loadgen.worker; this package plans them, starts or finds the cluster and reports."""
