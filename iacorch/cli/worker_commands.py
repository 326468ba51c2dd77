"""`iacorch worker`: run the stage attempts of one worker pool."""

from __future__ import annotations

import click

from iacorch.cli.session import BROKER_VARIABLE, store_option
from iacorch.errors import UsageError


@click.command()
@click.option("--pool", "pool", required=True, metavar="NAME",
              help="The pool to serve: stages with `pool: NAME` (Celery queue pool-NAME).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Attempts this worker runs at once.")
@click.option("--broker", "broker_url", metavar="URL", envvar=BROKER_VARIABLE,
              help="The Celery broker, e.g. redis://host:6379/0 (default: $IACORCH_BROKER).")
@click.option("--policy", "policy_dir", metavar="DIR", envvar="IACORCH_POLICY_DIR",
              help="The organisation's policy, asked again before each stage starts here "
                   "(default: $IACORCH_POLICY_DIR).")
@store_option
def worker(pool: str, concurrency: int, broker_url: str | None,
           store_url: str | None, policy_dir: str | None) -> None:
    """Run stages of the worker pool NAME for coordinators sharing this store and broker.

    Needs the [workers] extra, the coordinators' PostgreSQL store (--store) and their
    $IACORCH_SHARED_DIR and $IACORCH_SEAL_KEY. SIGTERM stops it after its running tasks.
    """
    import re

    from iacorch.model.runbook import POOL_NAME
    from iacorch.workers.worker import serve

    if not re.match(POOL_NAME, pool):
        raise UsageError(f"{pool!r} is not a pool name",
                         hint="letters, digits, '_', '.' and '-', starting with a letter or "
                              "digit, as in the runbook's `pool:`")
    if not broker_url:
        raise UsageError("a worker needs a broker",
                         hint=f"give --broker redis://host:6379/0 or set ${BROKER_VARIABLE}")
    from iacorch.store import is_postgres_url

    if not store_url or not is_postgres_url(store_url):
        raise UsageError("a worker needs the coordinators' PostgreSQL store",
                         hint="give --store postgresql://... or set $IACORCH_STORE")
    from iacorch.policy.guard import guard_for

    serve(pool, concurrency, store_url, broker_url, guard_for(policy_dir))


COMMANDS = [worker]
