"""Commands for the distributed runtime: ``keys``, ``worker``, ``run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer

from ..errors import ConfigError
from ._options import CalibrationImages, DataDir, Force, count
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


# run's options, declared here so that the command reads as a list of them
_Workers = Annotated[str | None, typer.Option(
    help="Running workers: dev1=tcp://HOST:PORT,dev2=...")]
_SpawnLocal = Annotated[bool, typer.Option(
    "--spawn-local", help="Start one worker per device on this machine, stop them after.")]
_Check = Annotated[bool, typer.Option(
    "--check", help="Compare every output with the local executor.")]
_Images = Annotated[int | None, typer.Option("-n", help="Images to stream (default: all the "
                                                        "data holds).")]
_Batch = Annotated[int, typer.Option(help="Images per request.")]
_Window = Annotated[int, typer.Option(help="Requests in flight.")]
_Deadline = Annotated[float, typer.Option(help="Seconds before a request is retried.")]
_EmulateLinks = Annotated[bool, typer.Option(
    "--emulate-links", help="Put a relay with the platform's bandwidth, latency and loss "
                            "on every link.")]
_Network = Annotated[str, typer.Option(
    help="loopback, or namespaces (root): each worker and the coordinator in a network "
         "namespace of its own, links shaped to the platform's bandwidth (tc tbf) and loss "
         "(nftables), its latency added by relays; starts the workers itself.")]
_Keys = Annotated[Path | None, typer.Option(help="Key directory (default: fresh keys "
                                                 "for --spawn-local).")]
_Advertise = Annotated[str, typer.Option(
    help="This machine's address as the workers reach it (results come back there).")]
_OnReject = Annotated[str, typer.Option(
    help="When a sealed message is rejected or a vote fails: drop the request, retry it, "
         "failover (retry avoiding the sender), or degrade (a rejected piece of a split "
         "tensor becomes zeros; the answer is flagged degraded).")]
_Vote = Annotated[int, typer.Option(
    help="M4: run every stage on 2 (detect) or 3 (mask) devices and vote; the plan "
         "needs that many replicas.")]
_Freivalds = Annotated[int, typer.Option(
    help="M4: check every stage's affine layers on another device with this many "
         "Freivalds rounds (a wrong claim passes with probability at most 2^-N; 0: off). "
         "With sealed links, a device that lies while verifying another's stage is caught "
         "too; see the README for what it does not cover.")]
_Json = Annotated[Path | None, typer.Option(
    "--json", help="Write the run's measured latency, throughput and busy time per device, "
                   "beside the cost model's prediction, to this JSON file.")]
_Calibrate = Annotated[bool, typer.Option(
    "--calibrate", help="Measure this machine for the host profile again first (else the "
                        "cached calibration is used, measured once if there is none).")]
_Guards = Annotated[int, typer.Option(
    help="M5: clip link tensors to per-channel ranges profiled on this many clean "
         "training images (0: off). Guards on activations inside stages (Ranger) run in "
         "the local executor only: campaign defences guard:activations or guard.")]


@app.command()
def run(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan YAML.")],
    workers: _Workers = None,
    spawn_local: _SpawnLocal = False,
    check: _Check = False,
    n: _Images = None,
    batch: _Batch = 1,
    window: _Window = 32,
    deadline: _Deadline = 10.0,
    emulate_links: _EmulateLinks = False,
    keys: _Keys = None,
    advertise: _Advertise = "127.0.0.1",
    on_reject: _OnReject = "failover",
    vote: _Vote = 1,
    freivalds: _Freivalds = 0,
    guards: _Guards = 0,
    data: DataDir = None,
    json_file: _Json = None,
    calibrate: _Calibrate = False,
    network: _Network = "loopback",
    calibration_images: CalibrationImages = 256,
) -> None:
    """Deploy a plan to workers and stream images (the test set by default) through it.

    Links whose plan entry sets a protection (mac:..., aead:...) are sealed, the
    coordinator's hops included. Exits non-zero when any request failed or --check
    found a difference, naming the devices that failed.

    Example: shardguard run plan.yaml --spawn-local --check -n 2000

    Example: shardguard run plan-replicas3.yaml --spawn-local --vote 3 --guards 5000

    Example: shardguard run plan.yaml --spawn-local --freivalds 2 --check -n 500

    Example: sudo shardguard run plan.yaml --network namespaces --check -n 200
    """
    from ..runtime.cluster import Cluster

    _check_workers(network, spawn_local, workers)
    count("-n", n)
    count("--guards", guards, least=0)
    bound, x, y, bounds = _prepare(plan_file, data, n, calibrate=calibrate, guards=guards,
                                   calibration_images=calibration_images)
    with Cluster(bound, workers=_parse_workers(workers or ""), spawn_local=spawn_local,
                 keys=keys, window=window, deadline_s=deadline,
                 emulate_links=emulate_links, advertise=advertise, on_reject=on_reject,
                 vote=vote, guards=bounds, freivalds=freivalds,
                 network=cast(Any, network)) as c:
        result = c.stream(x.numpy(), batch=batch)
        stats = c.stats()
    ok = _print_answers(result, y.numpy() if y is not None else None)
    _print_devices(result, stats, on_reject)
    _report_fidelity(bound, result, stats, window, batch, vote, emulate_links, json_file,
                     network)
    if check:
        _check_against_local(bound, bounds, x, result, ok)
    _raise_on_failed_requests(result)


def _prepare(plan_file: Path, data: str | None, n: int | None, *, calibrate: bool,
             guards: int, calibration_images: int) -> tuple[Any, Any, Any, Any]:
    """The bound plan (the host profile calibrated if it is used, int8 stages quantized),
    the first ``n`` images of its data and their labels, and the guards' bounds."""
    from ..data import plan_data
    from ..partition import bind
    from ..runtime.quantize import calibrate as quantize

    bound = bind(_calibrate_host(plan_file, calibrate))
    dataset = plan_data(data, bound)
    print(f"data: {dataset.describe()}")
    print(quantize(bound.compiled, dataset, calibration_images) or "", end="")
    bounds = _profiled_bounds(bound, dataset, guards) if guards else None
    return bound, dataset.images(n), dataset.labels(n), bounds


def _calibrate_host(plan_file: Path, force: bool) -> Path:
    """Calibrate the host profile when the plan's platform uses it (and none of this
    machine is cached), or always with ``force``; ``plan_file``."""
    from ..partition.plan import load_plan
    from ..platform import load_platform
    from ..platform.host import calibration_file
    from ..runtime.calibrate import ensure_calibrated

    platform = load_platform(load_plan(plan_file).platform)
    if force or any(d.profile == "host" for d in platform.devices.values()):
        if ensure_calibrated(force):
            print(f"calibrated this machine for the host profile: {calibration_file()}")
    return plan_file


def _report_fidelity(bound: Any, result: Any, stats: dict[str, Any], window: int, batch: int,
                     vote: int, emulated: bool, json_file: Path | None,
                     network: str) -> None:
    """Measured against predicted, printed; and written to ``json_file`` if given."""
    import json

    from ..runtime.fidelity import fidelity

    where = {"namespaces": "network namespaces: links shaped in the kernel, latency by relays",
             "loopback": "links emulated by relays over loopback" if emulated else "loopback"}
    # in namespaces every link goes through a relay (the platform's latency): its costs count
    fid = fidelity(bound, result, stats, window=window, batch=batch, vote=vote,
                   emulated=emulated or network == "namespaces", network=where[network])
    print("\n".join(fid.lines()))
    if json_file is not None:
        json_file.write_text(json.dumps(fid.to_dict(), indent=2) + "\n")
        print(f"wrote {json_file}")


def _check_workers(network: str, spawn_local: bool, workers: str | None) -> None:
    """Where the workers come from, checked before anything is loaded."""
    if network not in ("loopback", "namespaces"):
        raise ConfigError(f"--network must be loopback or namespaces, got {network!r}")
    if network == "namespaces":
        from ..runtime.netns import check_available

        check_available()  # one line if this cannot work here
    elif not spawn_local and not workers:
        raise ConfigError("give --workers dev1=tcp://HOST:PORT,... or --spawn-local")


def _raise_on_failed_requests(result: Any) -> None:
    """One error naming how many requests failed, the failed devices and the first error."""
    from ..errors import TransportError

    if result.errors:
        first = next(iter(result.errors.values()))
        lost = f" ({', '.join(result.failed_devices)} failed)" if result.failed_devices else ""
        raise TransportError(f"{len(result.errors)} of {len(result.latency_s)} requests failed"
                             f"{lost}; first: {first}")


def _profiled_bounds(bound: Any, dataset: Any, guards: int) -> Any:
    """Range guards' per-channel bounds, profiled on ``guards`` clean training images."""
    from ..defences.guards import profile_bounds

    bounds = profile_bounds(bound.compiled, dataset.train_images(guards))
    print(f"guards: ranges profiled on {min(guards, len(dataset))} images, "
          f"{dataset.training_note}")
    return bounds


def _print_answers(result: Any, labels: Any) -> Any:
    """How many requests were answered, the accuracy on the answered images, and latency;
    which images were answered. An answer with a NaN or an infinity is answered but cannot
    be scored: it counts as wrong, never as a class."""
    import numpy as np

    from ..analysis.metrics import rate, scored

    rows = result.outputs.reshape(len(result.outputs), -1)
    ok = ~np.isnan(rows).all(1)  # a request never answered leaves its rows all NaN
    predicted, scorable = (t.numpy() for t in scored(rows))
    degraded = int(result.degraded.sum()) if result.degraded is not None else 0
    print(f"{result.answered}/{len(result.latency_s)} requests answered "
          f"{f'({degraded} degraded) ' if degraded else ''}"
          f"({result.samples} images, {len(result.errors)} failed, {result.resubmitted} "
          f"resubmitted, {result.duplicates} duplicates dropped)")
    if not scorable[ok].all():
        print(f"{int((ok & ~scorable).sum())} answered images have NaN or infinite outputs: "
              "no class, counted as wrong")
    if labels is not None and ok.any():
        right = int((predicted[ok] == labels[ok]).sum())
        print(f"accuracy {rate(right, int(ok.sum()))} on {int(ok.sum())} answered images")
    elif labels is None:
        print("no labels: no accuracy (--check compares every answer with the local executor)")
    pct = result.percentiles()
    if pct:
        print("latency " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in pct.items())
              + f"; throughput {result.throughput:.1f} images/s")
    return ok


def _print_devices(result: Any, stats: dict[str, Any], on_reject: str) -> None:
    """Per device: stage times, bytes received, rejections; then failures and alarms."""
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


def _check_against_local(bound: Any, bounds: Any, x: Any, result: Any, ok: Any) -> None:
    """--check: every answered output against the local executor (with the same clipping)."""
    import numpy as np
    import torch

    from ..analysis.metrics import rate, scored
    from ..errors import IntegrityError
    from ..local import LocalExecutor

    with torch.no_grad():
        from ..defences.guards import RangeGuard

        hooks = [RangeGuard(bounds)] if bounds is not None else []  # the same clipping
        ref = LocalExecutor(bound.compiled, hooks)(x).numpy()
    got, want = result.outputs[ok], ref[ok]
    # a NaN or infinity where the other has a number is a difference, never a pass
    both = (np.isnan(got) & np.isnan(want)) | (np.isinf(got) & (got == want))
    gap = np.where(both, 0.0, np.nan_to_num(np.abs(got - want), nan=np.inf))
    diff = float(gap.max()) if ok.any() else 0.0
    finite = ref[np.isfinite(ref)]
    scale = float(finite.max() - finite.min()) if finite.size else 0.0
    scale = scale or 1.0
    same = int((scored(got)[0] == scored(want)[0]).sum())
    print(f"check: max |difference| {diff:.3g} ({diff / scale:.2e} of the output range); "
          f"same class on {same}/{int(ok.sum())}")
    if bound.compiled.quantized is not None:  # int8: the same stages, top-1 agreement
        print(f"int8: local and distributed top-1 agreement {rate(same, int(ok.sum()))}")
        if same < 0.999 * int(ok.sum()):
            raise IntegrityError("distributed int8 answers agree with the local executor's "
                                 "on fewer than 99.9% of images")
    elif diff / scale > 1e-4 or same != int(ok.sum()):
        raise IntegrityError("distributed outputs differ from the local executor")
    print(f"distributed run matches the local executor on {int(ok.sum())} answered images")
