"""Commands for the distributed runtime: ``keys``, ``worker``, ``run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ._options import DataDir, Force, count
from .app import app

keys_app = typer.Typer(help="CurveZMQ keys for the coordinator and the devices.",
                       context_settings={"help_option_names": ["-h", "--help"]},
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="Directory to write the keys to.")],
    devices: Annotated[str, typer.Option(help="Comma-separated device names.")],
    force: Force = False,
) -> None:
    """Create key pairs for the coordinator and every device.

    Example: shardguard keys generate keys/ --devices pi1,pi2,pi3,pi4
    """
    from ..runtime.keys import generate

    names = [d.strip() for d in devices.split(",") if d.strip()]
    if not names:
        raise ConfigError("--devices: give at least one device name")
    written = generate(directory, names, force=force)
    print(f"wrote {len(written)} key files to {directory}; copy NAME.key_secret and "
          "authorized/ to each device")


@app.command()
def worker(
    bind: Annotated[str, typer.Option(help="Control address, e.g. tcp://0.0.0.0:5555; data "
                                           "binds port + 1 (port 0: free ports).")],
    name: Annotated[str, typer.Option(help="This device's name in the platform.")],
    keys: Annotated[Path | None, typer.Option(help="Key directory (shardguard keys generate).")]
    = None,
    threads: Annotated[int, typer.Option(help="onnxruntime threads.")] = 1,
    allow_fault_injection: Annotated[bool, typer.Option(
        "--allow-fault-injection", help="Obey the coordinator's behave messages (threat "
        "experiments: make this worker slow, lie or flip bits). Off on real deployments.")]
    = False,
) -> None:
    """Run the worker for one device until stopped (needs only the light dependencies).

    Example: shardguard worker --bind tcp://0.0.0.0:5555 --name pi1 --keys keys/
    """
    from ..runtime.worker import main as worker_main

    argv = ["--bind", bind, "--name", name, "--threads", str(threads)]
    if allow_fault_injection:
        argv.append("--allow-fault-injection")
    if keys is not None:
        argv += ["--keys", str(keys)]
    code = worker_main(argv)
    if code:
        raise typer.Exit(code)


def _parse_workers(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, address = item.partition("=")
        if not sep or not address.startswith("tcp://"):
            raise ConfigError(f"--workers {item!r}: expected DEVICE=tcp://HOST:PORT")
        out[name.strip()] = address.strip()
    return out


@app.command()
def run(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan YAML.")],
    workers: Annotated[str | None, typer.Option(
        help="Running workers: dev1=tcp://HOST:PORT,dev2=...")] = None,
    spawn_local: Annotated[bool, typer.Option(
        "--spawn-local", help="Start one worker per device on this machine, stop them after.")]
    = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Compare every output with the local executor.")] = False,
    n: Annotated[int | None, typer.Option("-n", help="Images to stream (default: all the "
                                                     "data holds).")] = None,
    batch: Annotated[int, typer.Option(help="Images per request.")] = 1,
    window: Annotated[int, typer.Option(help="Requests in flight.")] = 32,
    deadline: Annotated[float, typer.Option(help="Seconds before a request is retried.")] = 10.0,
    emulate_links: Annotated[bool, typer.Option(
        "--emulate-links", help="Put a relay with the platform's bandwidth, latency and loss "
                                "on every link.")] = False,
    keys: Annotated[Path | None, typer.Option(help="Key directory (default: fresh keys "
                                                      "for --spawn-local).")] = None,
    advertise: Annotated[str, typer.Option(
        help="This machine's address as the workers reach it (results come back there).")]
    = "127.0.0.1",
    on_reject: Annotated[str, typer.Option(
        help="When a sealed message is rejected or a vote fails: drop the request, retry it, "
             "failover (retry avoiding the sender), or degrade (a rejected piece of a split "
             "tensor becomes zeros; the answer is flagged degraded).")] = "failover",
    vote: Annotated[int, typer.Option(
        help="M4: run every stage on 2 (detect) or 3 (mask) devices and vote; the plan "
             "needs that many replicas.")] = 1,
    freivalds: Annotated[int, typer.Option(
        help="M4: check every stage's affine layers on another device with this many "
             "Freivalds rounds (a wrong claim passes with probability at most 2^-N; 0: off). "
             "With sealed links, a device that lies while verifying another's stage is caught "
             "too; see the README for what it does not cover.")]
    = 0,
    guards: Annotated[int, typer.Option(
        help="M5: clip link tensors to per-channel ranges profiled on this many clean "
             "training images (0: off).")] = 0,
    data: DataDir = None,
) -> None:
    """Deploy a plan to workers and stream images (the test set by default) through it.

    Links whose plan entry sets a protection (mac:..., aead:...) are sealed, the
    coordinator's hops included. Exits non-zero when any request failed or --check
    found a difference, naming the devices that failed.

    Example: shardguard run plan.yaml --spawn-local --check -n 2000

    Example: shardguard run plan-replicas3.yaml --spawn-local --vote 3 --guards 5000

    Example: shardguard run plan.yaml --spawn-local --freivalds 2 --check -n 500
    """
    import numpy as np
    import torch

    from ..analysis.metrics import rate
    from ..data import plan_data
    from ..errors import IntegrityError, TransportError
    from ..local import LocalExecutor
    from ..partition import bind
    from ..runtime.cluster import Cluster

    if not spawn_local and not workers:
        raise ConfigError("give --workers dev1=tcp://HOST:PORT,... or --spawn-local")
    count("-n", n)
    count("--guards", guards, least=0)
    bound = bind(plan_file)
    dataset = plan_data(data, bound)
    print(f"data: {dataset.describe()}")
    x, y = dataset.images(n), dataset.labels(n)
    labels = y.numpy() if y is not None else None
    bounds = None
    if guards:
        from ..defences.guards import profile_bounds

        bounds = profile_bounds(bound.compiled, dataset.train_images(guards))
        print(f"guards: ranges profiled on {min(guards, len(dataset))} images, "
              f"{dataset.training_note}")
    with Cluster(bound, workers=_parse_workers(workers or ""), spawn_local=spawn_local,
                 keys=keys, window=window, deadline_s=deadline,
                 emulate_links=emulate_links, advertise=advertise, on_reject=on_reject,
                 vote=vote, guards=bounds, freivalds=freivalds) as c:
        result = c.stream(x.numpy(), batch=batch)
        stats = c.stats()
    ok = ~np.isnan(result.outputs).any(axis=tuple(range(1, result.outputs.ndim)))
    degraded = int(result.degraded.sum()) if result.degraded is not None else 0
    print(f"{result.answered}/{len(result.latency_s)} requests answered "
          f"{f'({degraded} degraded) ' if degraded else ''}"
          f"({result.samples} images, {len(result.errors)} failed, {result.resubmitted} "
          f"resubmitted, {result.duplicates} duplicates dropped)")
    if labels is not None and ok.any():
        right = int((result.outputs[ok].argmax(1) == labels[ok]).sum())
        print(f"accuracy {rate(right, int(ok.sum()))} on {int(ok.sum())} answered images")
    elif labels is None:
        print("no labels: no accuracy (--check compares every answer with the local executor)")
    pct = result.percentiles()
    if pct:
        print("latency " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in pct.items())
              + f"; throughput {result.throughput:.1f} images/s")
    print("this run, per device:")
    for device, s in stats.items():
        stages = ", ".join(f"{k} {v['compute_s'] * 1e3 / max(1, v['runs']):.3f} ms/run"
                           for k, v in s["stages"].items())
        links = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in s["bytes_per_link"].items())
        rejected = ", ".join(f"{k} {n}" for k, n in sorted(s["rejected"].items()))
        flagged = f"; guards flagged {s['flagged']} samples" if s.get("flagged") else ""
        print(f"  {device}: {stages or 'standby'}; received {links or '-'}"
              f"{f'; rejected {rejected}' if rejected else ''}{flagged}")
    for device in result.failed_devices:
        print(f"  {device}: FAILED during the run (no answer on its control connection)")
    if result.alarms:
        print(f"{result.alarms} message(s) rejected (sealed links, votes or checks); "
              f"policy {on_reject}: {result.resubmitted} resubmitted, "
              f"{len(result.errors)} failed")
    if result.routed_around:
        print(f"routed around {', '.join(result.routed_around)}: their messages were rejected")
    if check:
        with torch.no_grad():
            from ..defences.guards import RangeGuard

            hooks = [RangeGuard(bounds)] if bounds is not None else []  # the same clipping
            ref = LocalExecutor(bound.compiled, hooks)(x).numpy()
        diff = float(np.abs(result.outputs[ok] - ref[ok]).max()) if ok.any() else 0.0
        scale = float(ref.max() - ref.min()) or 1.0
        same = int((result.outputs[ok].argmax(1) == ref[ok].argmax(1)).sum())
        print(f"check: max |difference| {diff:.3g} ({diff / scale:.2e} of the output range); "
              f"same class on {same}/{int(ok.sum())}")
        if diff / scale > 1e-4 or same != int(ok.sum()):
            raise IntegrityError("distributed outputs differ from the local executor")
        print(f"distributed run matches the local executor on {int(ok.sum())} answered images")
    if result.errors:
        first = next(iter(result.errors.values()))
        lost = f" ({', '.join(result.failed_devices)} failed)" if result.failed_devices else ""
        raise TransportError(f"{len(result.errors)} of {len(result.latency_s)} requests failed"
                             f"{lost}; first: {first}")
