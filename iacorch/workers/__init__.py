"""Stage attempts on Celery workers over a broker, fenced by leases in PostgreSQL.

`executor.CeleryExecutor` (the coordinating run) ships the attempts of stages that have a
`pool:` to the Celery queue `pool-NAME`; `worker` runs them (`iacorch worker --pool NAME`);
`iacorch.store.pg_leases` makes sure a redelivered task never starts a tool twice.
Celery is an optional extra, imported only here and only when asked for.
"""
