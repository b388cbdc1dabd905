"""Runtime services layer: the cluster services (login, msg, router, biz, file, gateway, ...)."""
