"""The store stage on the service side: feeding the applier process, the process itself,
and the local query of a store."""
