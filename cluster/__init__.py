"""Sweeps on a Ray cluster: each task in a Ray actor, one rate per connection and one
budget for the whole cluster, results and run directories back in the driver's sweep
directory (`cluster.driver`). Ray is imported only when a sweep runs on it.
"""

from __future__ import annotations

from opro.cluster.driver import ClusterError, RayOptions, RaySweepResult, ray_sweep

__all__ = ["ClusterError", "RayOptions", "RaySweepResult", "ray_sweep"]
