"""``run --network namespaces``: workers in network namespaces of their own on shaped links,
run as a user runs it (a fresh process), and nothing left behind however the run ends."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shardguard import load_platform
from shardguard.runtime.netns import Namespaces, sweep, uniform_link
from tests.conftest import eventually, run_cli, succeeded

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("netns")]
ENV = {**os.environ, "SHARDGUARD_QUIET": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def leftovers(pid: int) -> list[str]:
    """What run ``pid`` left: its namespaces, links or nftables tables (root namespace)."""
    prefix = f"sg-{pid}-"
    listed = [subprocess.run(argv, capture_output=True, text=True, check=True).stdout
              for argv in (["ip", "netns", "list"], ["ip", "link"], ["nft", "list", "tables"])]
    return [line for text in listed for line in text.splitlines() if prefix in line]


def namespace_pids(pid: int, device: str) -> list[int]:
    """The processes inside run ``pid``'s namespace of ``device``."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ns = [n.split()[0] for n in names.splitlines() if re.match(rf"sg-{pid}-\d+-{device}\b", n)]
    if not ns:
        return []
    out = subprocess.run(["ip", "netns", "pids", ns[0]], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def received(pid: int) -> int:
    """Bytes run ``pid``'s devices have received on their shaped links (tc's counters)."""
    out = subprocess.run(["tc", "-s", "-n", f"sg-{pid}-hub", "qdisc", "show"],
                         capture_output=True, text=True).stdout
    return sum(int(n) for n in re.findall(r"Sent (\d+) bytes", out))


def platform_file(tmp_path: Path, bandwidth: float, latency: float, loss: float = 0.0) -> Path:
    path = tmp_path / "slow.yaml"
    path.write_text(f"""name: slow
medium: {{bandwidth_bps: {bandwidth}, latency_s: {latency}, loss: {loss},
         tx_j_per_byte: 0.0, rx_j_per_byte: 0.0}}
devices:
""" + "".join(f"  - {{name: pi{i}, profile: raspberry-pi-4}}\n" for i in range(1, 5)))
    return path


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """lenet5 in two stages on 100 Mbit/s Ethernet, with a replica each, sealed; and the same
    model on a 1 Mbit/s, 20 ms medium."""
    tmp = tmp_path_factory.mktemp("netns")
    out = {"replicas": tmp / "plan.yaml", "slow": tmp / "slow-plan.yaml"}
    succeeded(run_cli("plan", "lenet5", "-p", "rpi4x4-ethernet", "--stages", "2", "--replicas",
                      "2", "--protection", "aead:chacha20-poly1305", "-o", str(out["replicas"])),
              "plan")
    succeeded(run_cli("plan", "lenet5", "-p", str(platform_file(tmp, 1e6, 0.02)), "--stages",
                      "2", "-o", str(out["slow"])), "slow plan")
    return out


def start_run(plan: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "shardguard", "run", str(plan), "--network",
                             "namespaces", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def test_a_run_in_namespaces_matches_the_local_executor_and_leaves_nothing(plans):
    proc = start_run(plans["replicas"], "--check", "-n", "1500")
    seen = eventually(lambda: namespace_pids(proc.pid, "pi1"), bool, timeout=60)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert seen, "the worker of pi1 never ran in a namespace of its own"
    assert "1500/1500 requests answered" in out
    assert "distributed run matches the local executor on 1500 answered images" in out
    assert leftovers(proc.pid) == []


def test_a_worker_killed_mid_stream_fails_over_and_leaves_nothing(plans):
    proc = start_run(plans["replicas"], "--check", "-n", "4000")  # 12.5 MB of images
    eventually(lambda: received(proc.pid), lambda n: n > 3e6, timeout=90)  # deployed, streaming
    victims = namespace_pids(proc.pid, "pi1")
    assert victims and proc.poll() is None
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "pi1: FAILED during the run" in out, out  # killed while streaming
    assert "4000/4000 requests answered" in out
    assert "distributed run matches the local executor on 4000 answered images" in out
    assert leftovers(proc.pid) == []


def test_ctrl_c_of_the_coordinator_mid_stream_leaves_nothing(plans):
    proc = start_run(plans["slow"], "-n", "2000")  # 1 Mbit/s: far longer than the test
    eventually(lambda: received(proc.pid), lambda n: n > 6e5, timeout=90)  # streaming
    workers = namespace_pids(proc.pid, "pi2")
    assert workers and proc.poll() is None, "the run ended before it was interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert workers and leftovers(proc.pid) == []
    for pid in workers:  # the workers died with their namespaces
        assert eventually(lambda p=pid: Path(f"/proc/{p}").exists(), lambda e: not e,
                          timeout=10) is False


def test_what_a_killed_coordinator_left_the_next_run_removes(plans):
    """SIGKILL cannot be caught: its namespaces stay until a later run's sweep, which
    removes those of runs whose process is gone (and only those)."""
    proc = start_run(plans["slow"], "-n", "2000")
    eventually(lambda: received(proc.pid), lambda n: n > 6e5, timeout=90)
    proc.kill()
    proc.communicate(timeout=30)
    left = leftovers(proc.pid)
    assert any(f"sg-{proc.pid}-hub" in line for line in left)
    assert f"sg-{proc.pid}-hub" in sweep()
    assert leftovers(proc.pid) == []


def test_links_are_shaped_to_the_platform_bandwidth_and_latency(plans):
    """1 Mbit/s and 20 ms per hop: an image is 3136 bytes (and ~300 of headers) into s0, so
    at most ~36 images/s cross its link, and three hops take at least 60 ms; over loopback
    the same plan streams many times faster."""
    runs = {name: succeeded(run_cli("run", str(plans["slow"]), *flags, "-n", "80",
                                    env={"OMP_NUM_THREADS": "1"}), name)
            for name, flags in (("namespaces", ["--network", "namespaces"]),
                                ("loopback", ["--spawn-local"]))}
    figures = {name: [float(re.search(pattern, r.out)[1])  # type: ignore[index]
                      for pattern in (r"latency p50 ([\d.]+) ms", r"throughput ([\d.]+) images")]
               for name, r in runs.items()}
    print("p50 latency (ms), throughput (images/s):", figures)
    (p50, rate), (plain_p50, plain_rate) = figures["namespaces"], figures["loopback"]
    assert 20 <= rate <= 40
    assert p50 >= 60
    assert plain_rate > 4 * rate and plain_p50 < p50 / 4  # loopback: unshaped


RECEIVE = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 9000))
print("bound", flush=True); s.settimeout(2.0); n = 0
try:
    while True:
        s.recv(64); n += 1
except socket.timeout:
    print(n)
"""
SEND = """import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(2000):
    s.sendto(b"x", (sys.argv[1], 9000)); time.sleep(0.0002)
"""


def test_the_kernel_drops_at_the_platform_loss_rate():
    """nftables drops what reaches a device at random: 30% of a's datagrams to b (the first
    member has the coordinator's seat: its own link is neither shaped nor lossy)."""
    link = type("Link", (), {"bandwidth_bps": 1e8, "loss": 0.3})()
    with Namespaces(["a", "b"], link) as net:
        receiver = subprocess.Popen(net.command("b", [sys.executable, "-c", RECEIVE,
                                                      net.address["b"]]),
                                    stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None and receiver.stdout.readline() == "bound\n"
        subprocess.run(net.command("a", [sys.executable, "-c", SEND, net.address["b"]]),
                       check=True, timeout=60)
        received = int(receiver.communicate(timeout=30)[0])
        qdisc = subprocess.run(["tc", "-n", net.namespace["b"], "qdisc", "show", "dev",
                                "eth0"], capture_output=True, text=True).stdout
    print(f"{2000 - received} of 2000 datagrams dropped at a 30% loss rate")
    assert 0.25 <= 1 - received / 2000 <= 0.35  # 30% ± 5 points (the 95% band is ±2)
    assert "tbf" in qdisc and "100Mbit" in qdisc
    assert leftovers(os.getpid()) == []


@pytest.mark.parametrize("command", [["run", "plan.yaml"], ["demo"]])
def test_without_root_it_says_what_it_needs(command):
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "shardguard", *command, "--network",
                           "namespaces"], capture_output=True, text=True, env=ENV, cwd="/")
    lines = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line]
    assert proc.returncode == 1
    assert lines == ["error: --network namespaces needs root (it creates network namespaces); "
                     "run as root or use --network loopback"]


def test_the_readme_boards_flow_fails_over_when_a_board_dies(plans, tmp_path):
    """README "Running workers on real boards", each board a namespace at its own address on
    100 Mbit/s links: keys made by ``keys generate``; each board given its own secret and
    ``authorized/`` only, running its own ``shardguard worker --bind tcp://0.0.0.0:5555``;
    the coordinator, in a namespace of its own, runs the sealed plan with replicas through
    them. pi1 (s0's first copy) is SIGKILLed mid-stream: every request is answered once,
    as the local executor answers it."""
    devices = ["pi1", "pi2", "pi3", "pi4"]
    keys = tmp_path / "keys"
    succeeded(run_cli("keys", "generate", str(keys), "--devices", ",".join(devices)), "keys")
    workers: dict[str, subprocess.Popen[str]] = {}
    medium = uniform_link(load_platform("rpi4x4-ethernet"))
    with Namespaces(["coordinator", *devices], medium) as net:
        try:
            for device in devices:  # ssh pi1 mkdir -m 700 keys; scp pi1.key_secret, authorized/
                board = tmp_path / device / "keys"
                board.mkdir(parents=True, mode=0o700)
                shutil.copy(keys / f"{device}.key_secret", board)
                shutil.copytree(keys / "authorized", board / "authorized")
                with open(tmp_path / device / "worker.log", "w") as log:
                    workers[device] = subprocess.Popen(net.command(device, [
                        sys.executable, "-m", "shardguard", "worker", "--bind",
                        "tcp://0.0.0.0:5555", "--name", device, "--keys", str(board)]),
                        stdout=subprocess.PIPE, stderr=log, text=True, env=ENV)
            for device, worker in workers.items():
                assert worker.stdout is not None
                assert worker.stdout.readline().startswith(f"READY {device} tcp://0.0.0.0:5555")
            run = subprocess.Popen(net.command("coordinator", [
                sys.executable, "-m", "shardguard", "run", str(plans["replicas"]),
                "--keys", str(keys), "--advertise", net.address["coordinator"], "--check",
                "-n", "4000", "--workers",
                ",".join(f"{d}=tcp://{net.address[d]}:5555" for d in devices)]),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
            eventually(lambda: received(os.getpid()), lambda n: n > 3e6, timeout=90)
            assert run.poll() is None, "the stream ended before the board died"
            workers["pi1"].kill()
            out, err = run.communicate(timeout=120)
        finally:
            for worker in workers.values():
                worker.kill()
                worker.communicate()
    assert run.returncode == 0, err[-2000:]
    assert "pi1: FAILED during the run" in out, out
    assert re.search(r"4000/4000 requests answered \(4000 images, 0 failed, [1-9]\d* resubmitted",
                     out), out
    assert "distributed run matches the local executor on 4000 answered images" in out
    assert leftovers(os.getpid()) == []
