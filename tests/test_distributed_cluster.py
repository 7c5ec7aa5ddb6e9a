"""Multi-node behaviour: a simulated 2-node cluster, `ray job submit` to a local head, and the
cluster-launcher configs checked by Ray's own validation.

The clusters here are separate from the suite's session Ray: the 2-node one runs in a child
process, and the job-submission head is a `ray start --head --block` process with its own temp
dir and ports, stopped by signalling exactly the processes it started (never `ray stop`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TWO_NODES = r"""
import json, sys
from pathlib import Path
from ray.cluster_utils import Cluster
import ray
from cryopick.distributed.data import StageParams, build_train_dataset, training_rows

sim = Path(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
try:
    cluster.wait_for_nodes()
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    mics = sorted((sim / "micrographs").glob("*.mrc"))
    rows = training_rows(mics * 2, sim / "coords", [], n_labeled=2, n_pseudo=0, hold_back=False)
    params = StageParams(diameter=24.0, preprocess={"bin": 2.0}, val_fraction=0.0, pseudo={})
    ds = build_train_dataset(rows, params, patch_size=32, data_cpus=1.0)
    seen = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for node, name in zip(batch["node"], batch["name"]):
            seen.setdefault(str(node), set()).add(str(name))
    print("RESULT " + json.dumps({"nodes": nodes, "seen": {k: sorted(v) for k, v in seen.items()}}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_data_stage_runs_on_both_nodes(sim_data: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", TWO_NODES, str(sim_data)], capture_output=True, text=True,
                          timeout=220, env=_clean_env())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert len(res["nodes"]) == 2
    assert set(res["seen"]) == set(res["nodes"])  # read/preprocess tasks ran on both nodes
    assert set().union(*map(set, res["seen"].values())) == {p.stem for p in (sim_data / "micrographs").glob("*.mrc")}


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in found}
        found |= frontier
    return sorted(found)


def _stop_head(proc: subprocess.Popen[str], temp_dir: str) -> None:
    """Stop only the head we started: SIGTERM to `ray start --block` (it shuts its processes down),
    then SIGKILL whatever of ours is left: its descendants and processes using our temp dir."""
    ours = set(_descendants(proc.pid))
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if temp_dir.encode() in cmdline.read_bytes():
                ours.add(int(cmdline.parent.name))
        except OSError:
            continue
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_ray_job_submit_self_training_pipeline(tmp_path: Path) -> None:
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Unix socket paths are limited
    gcs, dash, agent, agent_grpc, client, metrics, rt_env = _free_ports(7)
    env = _clean_env()
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
         f"--dashboard-agent-grpc-port={agent_grpc}", f"--ray-client-server-port={client}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rt_env}", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    out = tmp_path / "campaign"
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the job API
            probe = subprocess.run(["ray", "job", "list", "--address", address], capture_output=True, text=True, env=env)
            if probe.returncode == 0:
                break
            assert head.poll() is None, head.stdout.read() if head.stdout else "head exited"
            time.sleep(2)
        config = yaml.safe_load((REPO / "pipelines/configs/tiny_cpu.yaml").read_text())
        config["model"] = {"base_width": 4, "depth": 2}  # the shipped tiny config, smaller still: this tests plumbing
        config["tune"].update(thresholds=[0.3, 0.6], min_distance_fractions=[0.75])
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
        cmd = [sys.executable, str(REPO / "pipelines" / "self_train.py"), "--config", str(tmp_path / "job.yaml"),
               "--out", str(out), "--simulate", "4", "--rounds", "1", "--steps", "6", "--patch-size", "32", "--quiet"]
        job = subprocess.run(["ray", "job", "submit", "--address", address, "--", *cmd],
                             capture_output=True, text=True, env=env, timeout=330)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        assert "MLflow store: sqlite:///" in job.stdout
        metrics = json.loads((out / "round_000" / "metrics.json").read_text())
        assert metrics["round"] == 0 and (out / "mlflow.db").is_file()
    finally:
        _stop_head(head, temp_dir)


def _validated(path: Path) -> dict[str, object]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(yaml.safe_load(path.read_text())))
    validate_config(config)
    return config


def test_cluster_configs_pass_ray_validation() -> None:
    import jsonschema

    aws = _validated(REPO / "cluster.yaml")
    assert aws["provider"]["type"] == "aws" and aws["head_node_type"] == "cpu_head"
    assert "g5" in aws["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"]
    assert any("pip install" in c and "cryopick" in c for c in aws["setup_commands"])
    onprem = _validated(REPO / "cluster.onprem.yaml")
    assert onprem["provider"]["type"] == "local" and len(onprem["provider"]["worker_ips"]) == 2
    broken = yaml.safe_load((REPO / "cluster.yaml").read_text())
    broken["available_node_types"]["gpu_worker"]["min_wrokers"] = 1
    from ray.autoscaler._private.util import prepare_config, validate_config

    with pytest.raises(jsonschema.ValidationError, match="min_wrokers"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("script", ["self_train.py", "tune.py"])
def test_pipelines_answer_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "pipelines" / script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ray job submit" in proc.stdout
