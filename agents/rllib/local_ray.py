"""Starting Ray on this machine alone, with nothing listening beyond it and nothing sent out."""

from __future__ import annotations

import os
from typing import Any


def init_local_ray(num_cpus: int | None = None, **init_kwargs: Any) -> Any:
    """``ray.init`` for a single-machine run: a new local Ray instance on 127.0.0.1, no dashboard, no usage
    statistics sent (``RAY_USAGE_STATS_ENABLED=0`` for this process and the Ray processes it starts), worker logs
    kept out of the driver's output. Returns what ``ray.init`` returns; ``ray.shutdown()`` ends it.

    Args:
        num_cpus: CPUs Ray may hand out (each EnvRunner takes one; default: the machine's count).
        **init_kwargs: more ``ray.init`` arguments (they override these).

    On a cluster, connect with ``ray.init(address="auto")`` instead (see docs/rllib.md).
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    settings: dict[str, Any] = dict(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
    )
    settings.update(init_kwargs)
    return ray.init(**settings)
