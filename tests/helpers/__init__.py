"""Shared helpers for the tests (test modules import from here, never from one another).

Modules:
    models: tiny random diffusers models (``tiny_unet``), the ``ddim`` scheduler helper and
        ``GaussianDenoiser``, the exact epsilon of a Gaussian data distribution.
    cli: run the ``tfg-search`` CLI in-process (``run_cli``) or as a subprocess (``run_proc``,
        ``cli_cmd``).
    pg: ``PostgresServer``, a throwaway private PostgreSQL server (used by conftest.py's fixtures).
    beam_reference: an independent implementation of the reference beam search and the
        deterministic objectives the searcher tests share.
    search: small search settings shared by the coordinator and query tests (``SMALL``).
    load: the cheap trial, settings and serial executor of the load test (test_load.py); its
        coordinator subprocesses import this module and ship ``cheap_trial`` to Ray workers by value.

This package imports nothing itself, so importing one module stays cheap (subprocesses do).
"""
