"""Operating the service: Prometheus metrics and their definitions, the progress line,
the health probes and HTTP server, `tidal-consumer status`."""
