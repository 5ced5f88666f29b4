"""The Kubernetes runner without a cluster: manifests built as typed `kubernetes.client` models,
rendered for the cases users meet (1-node CPU, 2-node GPU, read-only PVC, NFS), validated
against the Kubernetes OpenAPI schema (kubernetes-validate, strict), and the pod's own argv and
environment run for real as two local processes that must train as one 2-rank job."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

from launcher.clusters import KubernetesSection  # noqa: E402
from launcher.launch import LaunchOptions, launch  # noqa: E402
from launcher.mounts import Mount  # noqa: E402
from launcher.runners import TaskCall  # noqa: E402
from launcher.runners.kubernetes_manifests import (  # noqa: E402
    KubernetesJob,
    escape_expansion,
    manifests,
    shm_quantity,
    to_dicts,
)
from pose_workloads.errors import BadInput  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _validate(objects) -> list[dict]:
    docs = to_dicts(objects)
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    return docs


def _job(tmp_path: Path, num_nodes=1, gpus=0, read_only=False, volume=None, **settings) -> KubernetesJob:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    mounts = (Mount.model_construct(source=data, destination="/workspace/data", read_only=read_only),
              Mount.model_construct(source=tmp_path / "launch", destination="/pose_launch", read_only=True))
    call = TaskCall(task="simple-pose train", args=("simple-pose", "train", "-e", "/pose_launch/spec.yaml",
                                                    "-r", "/workspace/data/run $(whoami)"),
                    image="pose-pytorch:0.1.0", mounts=mounts, nproc=max(gpus, 1), num_nodes=num_nodes,
                    user="1000:1000", workdir="/workspace/data")
    volume = volume or {"pvc": {"claim_name": "datasets", "sub_path": "coco"}}
    section = KubernetesSection.model_validate({"namespace": "vision", "volumes": [{"source": str(data), **volume}],
                                                **settings})
    return KubernetesJob(call=call, name="pose-simple-pose-train-abc123", files={"spec.yaml": "a: 1\n"},
                         settings=section, gpus_per_pod=gpus)


def _pod(docs: list[dict]) -> dict:
    return docs[2]["spec"]["template"]["spec"]


def test_one_node_cpu(tmp_path):
    docs = _validate(manifests(_job(tmp_path)))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "Job"]
    job = docs[2]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"], job["backoffLimit"]) == ("Indexed", 1, 1, 0)
    container = _pod(docs)["containers"][0]
    assert container["args"][:3] == ["python", "-m", "pose_workloads"]
    assert "resources" not in container
    assert _pod(docs)["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000}
    assert docs[0]["data"] == {"spec.yaml": "a: 1\n"}


def test_two_node_gpu(tmp_path):
    docs = _validate(manifests(_job(tmp_path, num_nodes=2, gpus=4, node_selector={"gpu": "h100"},
                                    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
                                    image_pull_secret="regcred")))
    pod = _pod(docs)
    container = pod["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "4"}}
    args = container["args"]
    assert args[args.index("--nnodes") + 1] == "2" and args[args.index("--nproc_per_node") + 1] == "4"
    assert args[args.index("--node_rank") + 1] == "$(JOB_COMPLETION_INDEX)"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["POSE_RDZV_ENDPOINT"] == "pose-simple-pose-train-abc123-0.pose-simple-pose-train-abc123:29500"
    assert pod["subdomain"] == docs[1]["metadata"]["name"] and docs[1]["spec"]["clusterIP"] == "None"
    assert docs[2]["spec"]["completions"] == docs[2]["spec"]["parallelism"] == 2
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["imagePullSecrets"] == [{"name": "regcred"}]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_read_only_pvc_keeps_read_only_and_sub_path(tmp_path):
    pod = _pod(_validate(manifests(_job(tmp_path, read_only=True))))
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/workspace/data")
    assert mount["readOnly"] is True and mount["subPath"] == "coco"


def test_nfs_volume(tmp_path):
    pod = _pod(_validate(manifests(_job(tmp_path, read_only=True, volume={"nfs": {"server": "nas", "path": "/coco"}}))))
    assert {"name": "mount-0", "nfs": {"server": "nas", "path": "/coco", "readOnly": True}} in pod["volumes"]


def test_a_user_value_is_never_expanded_by_kubernetes(tmp_path):
    args = _pod(to_dicts(manifests(_job(tmp_path))))["containers"][0]["args"]
    assert "/workspace/data/run $$(whoami)" in args
    assert escape_expansion("$(A) $B") == "$$(A) $B"


def test_shm_size_in_kubernetes_units():
    assert [shm_quantity(s) for s in ("16G", "512m", "64k", 1024)] == ["16Gi", "512Mi", "64Ki", "1024"]


def test_a_mount_without_a_volume_is_refused_before_anything(tmp_path):
    job = _job(tmp_path)
    job = KubernetesJob(call=job.call, name=job.name, files={}, settings=KubernetesSection())
    with pytest.raises(BadInput, match=r"has no Kubernetes volume; add .* to Kubernetes.volumes"):
        manifests(job)


def test_dry_run_prints_manifests_without_a_cluster(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "mounts.json").write_text(json.dumps({
        "Mounts": [{"source": str(data), "destination": "/workspace/data"}],
        "Kubernetes": {"volumes": [{"source": str(data), "host_path": {"path": "/srv/data"}}]}}))
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "mounts.json"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.chdir(data)
    assert launch("selftest", "", {}, LaunchOptions(runner="k8s", num_nodes=2, gpus=0, dry_run=True)) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "Job"]
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_no_kubeconfig_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    (tmp_path / "mounts.json").write_text("{}")
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "mounts.json"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="no usable kubeconfig .*set KUBECONFIG"):
        launch("selftest", "", {}, LaunchOptions(runner="k8s"))


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of container args ($$ escapes it)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), arg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_pods_argv_and_env_train_as_one_two_rank_job(tmp_path, monkeypatch):
    """Two local processes, each started with exactly what the manifest gives its container
    (args, env with JOB_COMPLETION_INDEX=0/1, working directory), the ConfigMap's files where the
    volume would project them, and the rendezvous on localhost instead of pod 0's DNS name."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "pose_workloads", "dataset", "synth", "-o", str(data / "synth"),
                    "--images", "8", "--size", "64x64", "--max_people", "1", "--seed", "3"], check=True,
                   capture_output=True, timeout=120)
    synth = data / "synth"
    spec = data / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "model": {"name": "simple_pose_tiny"},
        "data": {"train_images": str(synth / "images"),
                 "train_annotations": str(synth / "annotations/person_keypoints.json"),
                 "val_images": str(synth / "images"),
                 "val_annotations": str(synth / "annotations/person_keypoints.json"),
                 "workers": 0},
        "train": {"input_size": [64, 64], "batch_size": 2, "epochs": 1, "eval_every": 0, "amp": False},
    }))
    # Mounted at the same path, TAO style, so that the container paths also exist here.
    (tmp_path / "mounts.json").write_text(json.dumps({
        "Mounts": [{"source": str(data), "destination": str(data)}],
        "Kubernetes": {"volumes": [{"source": str(data), "host_path": {"path": str(data)}}]}}))
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "mounts.json"))
    monkeypatch.chdir(data)
    import launcher.runners.kubernetes as runner

    rendered = []
    monkeypatch.setattr(runner, "to_yaml", lambda objects: rendered.extend(objects) or "")
    assert launch("simple-pose", "train", {"-e": str(spec), "-r": str(data / "run")},
                  LaunchOptions(runner="k8s", num_nodes=2, gpus=0, dry_run=True)) == 0
    config_map, _, job = to_dicts(rendered)
    launch_dir = tmp_path / "pose_launch"  # where the ConfigMap volume would put its files
    launch_dir.mkdir()
    for name, text in config_map["data"].items():
        (launch_dir / name).write_text(text)
    container = job["spec"]["template"]["spec"]["containers"][0]
    port = _free_port()
    processes = []
    for index in (0, 1):
        env = {e["name"]: e.get("value") for e in container["env"]}
        env["JOB_COMPLETION_INDEX"] = str(index)  # what the fieldRef gives pod <index>
        env["POSE_RDZV_ENDPOINT"] = f"127.0.0.1:{port}"
        args = [_expand(a, env).replace("/pose_launch", str(launch_dir)) for a in container["args"]]
        assert args[0] == "python"
        processes.append(subprocess.Popen(
            args, cwd=container["workingDir"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}))
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert "x 2 process(es)" in outputs[0], outputs[0]
    assert (data / "run" / "model_final.pth").is_file()
