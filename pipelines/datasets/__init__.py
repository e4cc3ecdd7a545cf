"""Datasets: feedback in the warehouse -> versioned, immutable snapshots -> exports trainers read.

Modules: ``config`` (options per kind), ``build`` (SQL builders), ``lint``, ``stats``, ``snapshot`` (write,
version, ``load_snapshot``), ``publish`` (the whole build), ``export`` (TRL, OpenRLHF, JSONL, Parquet).
"""
