"""Serving the flows: the registry of deployable flows, ``alignloop serve`` (a local server and runner), work-pool
deployments and the global concurrency limits they share."""
