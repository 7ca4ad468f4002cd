"""A sweep's points as Ray tasks: on a cluster (`ray start --head`, then `ray start --address ...` per node), or a
local Ray instance. Ray is an optional extra: `pip install -e '.[cluster]'`.

Ray schedules; each task is `sweep.run_point`, the function the local backend runs, so results are the same.
"""

import os
import socket
from pathlib import Path

from mnist_kit.errors import Interrupted, UserError
from mnist_kit.invocation import install_hint
from mnist_kit.recipe import load_recipe
from mnist_kit.sweep import Backend, Point, failed_row, run_point


def import_ray():
    """The ray module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--backend ray needs Ray, which is not installed: {install_hint('cluster')}") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local instance; True if this call started it."""
    if ray.is_initialized():  # a notebook that called ray.init itself
        return False
    quiet = {"log_to_driver": False, "logging_level": "warning", "include_dashboard": False}
    where = address or os.environ.get("RAY_ADDRESS")
    try:
        if where:
            check_reachable(where)
            ray.init(address=address, **quiet)
        else:  # "local": a new instance, even where `ray start` runs one (join that with --address auto)
            ray.init(address="local", num_cpus=os.cpu_count(), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as error:
        if not where:
            raise UserError(f"cannot start a local Ray instance: {str(error).splitlines()[0]}") from None
        hint = ("" if os.environ.get("RAY_AUTH_MODE") else "; if the cluster uses token authentication (Ray's "
                "default for a head started here), set RAY_AUTH_MODE=token and its token (ray get-auth-token)")
        raise UserError(f"cannot reach the Ray cluster at {where}: {str(error).splitlines()[0]}{hint}") from None
    return True


def check_reachable(address: str, seconds: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on (ray.init would retry for minutes); `auto` is Ray's to find."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=seconds).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {host}:{port} ({error.strerror or error}); is `ray start` "
                              f"running there?") from None


def gpus_for(base: str, point: Point, cluster_gpus: float) -> int:
    """1 if the point's recipe trains on CUDA (device cuda, or auto on a cluster that has GPUs), else 0."""
    device = load_recipe(base, point.overrides).config["train"]["device"]
    return int(device.startswith("cuda") or (device == "auto" and cluster_gpus > 0))


def ray_backend(address: str | None = None, cpus_per_point: int = 1) -> Backend:
    """A sweep backend that runs the points as Ray tasks: `run_sweep(path, backend=ray_backend(...))`."""

    def run(base: str, points: list[Point], data_dir: Path, report) -> None:
        run_on_ray(base, points, data_dir, address, cpus_per_point, report)

    return run


def run_on_ray(base: str, points: list[Point], data_dir: Path, address: str | None = None,
               cpus_per_point: int = 1, on_row=print) -> None:
    """Run every point as a Ray task (`cpus_per_point` CPUs, one GPU where it trains on CUDA); `on_row` gets each
    point's summary row as it ends.

    Paths must be ones every node can reach (a shared filesystem). A failed point is reported and the rest go on;
    Ctrl-C cancels the outstanding tasks (finished points are kept, interrupted ones resume on a rerun).
    """
    ray = import_ray()
    started = connect(ray, address)
    try:
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
        if cpus_per_point > largest:  # Ray would wait forever for a machine that big
            raise UserError(f"--cpus-per-point {cpus_per_point}: no machine in the Ray cluster has more than "
                            f"{largest:g} CPUs")
        task = ray.remote(run_point)
        pending = {}
        for point in points:
            gpus = gpus_for(base, point, cluster_gpus)
            if gpus > cluster_gpus:  # Ray would wait for it forever
                on_row(failed_row(point, "it trains on CUDA and the Ray cluster has no GPU"))
                continue
            ref = task.options(num_cpus=cpus_per_point, num_gpus=gpus).remote(base, point, data_dir, cpus_per_point)
            pending[ref] = point
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                point = pending.pop(ref)
                try:
                    on_row(ray.get(ref))
                except ray.exceptions.RayError as error:  # the worker died (out of memory, node lost, ...)
                    on_row(failed_row(point, f"{type(error).__name__}: {str(error).strip().splitlines()[-1]}"))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)  # the task sees KeyboardInterrupt: a training point keeps its last epoch
            raise Interrupted(f"interrupted: {len(pending)} unfinished points cancelled; run the sweep again to "
                              f"finish them (finished points are skipped, interrupted ones resume)") from None
    finally:
        if started:
            ray.shutdown()
