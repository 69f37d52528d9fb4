"""Static checks of deploy/docker-compose.yml and deploy/Dockerfile (no Docker engine needed)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SERVICES = ("vault", "backup", "policy", "replication")
MODULES = [f"cbr_{name}" for name in SERVICES]
PYTHONPATH_DIRS = [f"/app/services/{d}" for d in ("common", *SERVICES, "cli")] + ["/app/gen"]

_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def published() -> dict:
    """docker-compose.override.yml: the ports published by a plain `docker compose up` (no -f)."""
    return yaml.safe_load((DEPLOY / "docker-compose.override.yml").read_text())["services"]


@pytest.fixture(scope="module")
def dockerfile() -> dict:
    """The Dockerfile's instructions, continuation lines joined, plus the final stage's ARG/ENV/CMD."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    instructions = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in lines]
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    final = instructions[last_from:]
    env: dict[str, str] = {}
    for op, rest in final:
        if op == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    cmds = [rest for op, rest in final if op == "CMD"]
    return {
        "text": text,
        "instructions": instructions,
        "final_args": [rest.split("=")[0] for op, rest in final if op == "ARG"],
        "env": env,
        "cmd": json.loads(cmds[-1]) if cmds else None,
    }


def interpolate(value: str) -> str:
    """Compose-style ${VAR:-default} substitution with an empty environment."""
    return _VAR.sub(lambda m: m.group(3) if m.group(2) == "-" else "", value)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def as_argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def port_of(addr: str) -> str:
    return addr.rsplit(":", 1)[1]


def effective_argv(service: dict, dockerfile: dict, tmp_path: Path) -> list[str]:
    """What the container runs: the compose command, else the Dockerfile CMD run by a real sh
    with the image's ENV (ARG SERVICE substituted) and a stub `python` that prints its argv."""
    if "command" in service:
        return as_argv(service["command"])
    cmd = dockerfile["cmd"]
    assert cmd, "no command in compose and no CMD in the Dockerfile"
    if shutil.which("sh") is None:
        pytest.skip("no sh to evaluate the Dockerfile CMD")
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    build_arg = service["build"]["args"]["SERVICE"]
    env = {k: v.replace("${SERVICE}", build_arg).replace("$SERVICE", build_arg)
           for k, v in dockerfile["env"].items()}
    env["PATH"] = f"{tmp_path}:{os.environ['PATH']}"
    argv = cmd if cmd[0] != "python" else [str(stub), *cmd[1:]]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return ["python", *out.splitlines()]


def test_dockerfile_selects_service_by_build_arg(dockerfile):
    assert "SERVICE" in dockerfile["final_args"]
    assert any("${SERVICE}" in v or "$SERVICE" in v for v in dockerfile["env"].values()), \
        "the SERVICE build arg must reach the runtime environment through ENV"
    assert dockerfile["env"]["PYTHONPATH"].split(":") == PYTHONPATH_DIRS


def test_dockerfile_installs_pinned_and_generates_stubs(dockerfile):
    runs = [rest for op, rest in dockerfile["instructions"] if op == "RUN"]
    assert any(re.search(r"pip install .*-r requirements\.txt.*-c constraints\.txt", r) for r in runs)
    protoc = [r for r in runs if "grpc_tools.protoc" in r]
    assert protoc and all(flag in protoc[0] for flag in ("-I protos", "--python_out=gen",
                                                         "--pyi_out=gen", "--grpc_python_out=gen"))


def test_dockerfile_never_copies_gen_or_whole_context(dockerfile):
    for op, rest in dockerfile["instructions"]:
        if op in ("COPY", "ADD") and not rest.startswith("--from"):
            sources = [s.rstrip("/") for s in shlex.split(rest)[:-1] if not s.startswith("--")]
            assert "gen" not in sources and "." not in sources and "*" not in sources, rest


def test_build_context_is_repo_root(compose):
    for name in (*SERVICES, "migrate"):
        build = compose["services"][name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert (context / "constraints.txt").is_file() and (context / "protos").is_dir()
        assert (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


@pytest.mark.parametrize("name", SERVICES)
def test_service_definition(compose, published, dockerfile, tmp_path, name):
    svc = compose["services"][name]
    assert svc["build"]["args"]["SERVICE"] == name
    assert effective_argv(svc, dockerfile, tmp_path) == ["python", "-m", f"cbr_{name}"]

    env = environment(svc)
    listen_port = port_of(env["CBR_LISTEN_ADDR"])
    assert env["CBR_LISTEN_ADDR"] == f"0.0.0.0:{listen_port}"
    assert re.fullmatch(r"postgresql\+psycopg://cbr:[^@]+@/cbr\?host=postgres&port=5432&"  # + a standby: test_standby
                        r"target_session_attrs=read-write", interpolate(env["CBR_DATABASE_URL"]))
    assert env["CBR_NATS_URL"].split(",")[0] == "nats://nats:4222"  # and the cluster's other nodes
    assert re.fullmatch(r"\$\{CBR_JWT_SECRET(:?[?-][^}]*)?\}", env["CBR_JWT_SECRET"]), "JWT secret must not be hard-coded"
    for peer in SERVICES:
        peer_port = port_of(environment(compose["services"][peer])["CBR_LISTEN_ADDR"])
        assert env[f"CBR_{peer.upper()}_ADDR"] == f"{peer}:{peer_port}"

    test = as_argv(svc["healthcheck"]["test"])
    assert test[0] in ("CMD", "CMD-SHELL")
    argv = test[1:] if test[0] == "CMD" else shlex.split(test[1])
    i = argv.index("cbr_common.healthcheck")
    assert argv[i - 1] == "-m" and argv[i + 1] in (f"127.0.0.1:{listen_port}", f"localhost:{listen_port}")

    deps = svc["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["nats"]["condition"] == "service_healthy"

    # Published in the default override only, so that the host-networking one can leave them out.
    assert not svc.get("ports")
    ports = [str(p).rsplit(":", 1) for p in published[name]["ports"]]
    assert ports and all(host.startswith("127.0.0.1:") and container == listen_port for host, container in ports)


def test_published_ports_are_distinct(published):
    assert set(published) == set(SERVICES) | {f"{name}-2" for name in SERVICES}  # and the second replicas
    hosts = [str(p).rsplit(":", 1)[0] for n in published for p in published[n]["ports"]]
    assert len(hosts) == len(set(hosts))


def test_backup_data_dirs_are_on_named_volumes(compose):
    svc = compose["services"]["backup"]
    env = environment(svc)
    mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
    for key in ("CBR_POOL_DIR", "CBR_FS_ROOT"):
        assert env[key] in mounts and mounts[env[key]] in compose["volumes"], key


def test_migrate_runs_once_after_postgres(compose, dockerfile, tmp_path):
    svc = compose["services"]["migrate"]
    assert svc["build"]["args"]["SERVICE"] == "migrate"
    argv = effective_argv(svc, dockerfile, tmp_path)
    assert argv[:3] == ["python", "-m", "cbr_common.migrate"] and sorted(argv[3:]) == sorted(MODULES)
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(svc.get("restart", "no")) == "no"
    assert "CBR_DATABASE_URL" in environment(svc)


def test_infrastructure_healthchecks(compose):
    pg = compose["services"]["postgres"]
    assert interpolate(pg["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(as_argv(pg["healthcheck"]["test"]))

    nats = compose["services"]["nats"]
    cmd = as_argv(nats["command"])
    assert "-js" in cmd and cmd[cmd.index("-sd") + 1] == "/data"
    monitor = cmd[cmd.index("-m") + 1]
    probe = " ".join(as_argv(nats["healthcheck"]["test"]))
    assert re.search(rf"\b(wget|curl)\b.*:{monitor}/healthz", probe)
    assert interpolate(nats["image"]).endswith("-alpine"), "the plain nats image is scratch-based: no wget/curl"
    assert any(v.split(":")[1] == "/data" for v in nats["volumes"])


def test_named_volumes_declared(compose):
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_env_example_covers_required_variables(compose):
    required = set(re.findall(r"\$\{(\w+):?\?", (DEPLOY / "docker-compose.yml").read_text()))
    example = dict(ln.split("=", 1) for ln in (DEPLOY / "cbr.env.example").read_text().splitlines()
                   if ln.strip() and not ln.startswith("#"))
    assert "CBR_JWT_SECRET" in required and required <= set(example)


def test_workers_share_the_backup_service_data_and_a_store(compose):
    worker, backup = compose["services"]["worker"], compose["services"]["backup"]
    assert worker["image"] == backup["image"] and worker["command"] == ["python", "-m", "cbr_backup.worker"]
    assert worker["deploy"]["replicas"] >= 2 and not worker.get("ports")
    env = environment(worker)
    mounts = {m.split(":")[1]: m.split(":")[0] for m in worker["volumes"]}
    for key in ("CBR_POOL_DIR", "CBR_FS_ROOT", "CBR_STORE_DIR"):
        assert env[key] in mounts and mounts[env[key]] in compose["volumes"], key
    backup_mounts = {m.split(":")[0]: m.split(":")[1] for m in backup["volumes"]}
    assert all(backup_mounts[v] == p for p, v in mounts.items() if v in backup_mounts)
    assert environment(worker)["CBR_DATABASE_URL"] == environment(backup)["CBR_DATABASE_URL"]


def test_dockerfile_builds_the_chunk_engine(dockerfile):
    runs = [rest for op, rest in dockerfile["instructions"] if op == "RUN"]
    assert any("setup.py" in r and "build_ext --inplace" in r for r in runs)
    copies = [rest for op, rest in dockerfile["instructions"] if op == "COPY"]
    assert any(c.startswith("--from=build") and "cbr_backup/engine" in c for c in copies)


BASE_ARGS = {"PYTHON_IMAGE": "CBR_PYTHON_IMAGE", "PYTHON_BUILD_IMAGE": "CBR_PYTHON_BUILD_IMAGE"}


def local_images() -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in (DEPLOY / "local-images.env").read_text().splitlines()
                if ln.strip() and not ln.startswith("#"))


def test_base_images_are_build_arguments_defaulting_to_the_public_ones(compose, dockerfile):
    top = dockerfile["instructions"][:min(i for i, (op, _) in enumerate(dockerfile["instructions"]) if op == "FROM")]
    assert dict(rest.split("=", 1) for op, rest in top if op == "ARG") == dict.fromkeys(BASE_ARGS, "python:3.11-slim")
    froms = [rest.split()[0] for op, rest in dockerfile["instructions"] if op == "FROM"]
    assert froms == ["${PYTHON_BUILD_IMAGE}", "${PYTHON_IMAGE}"]
    for name in (*SERVICES, "migrate"):
        args = compose["services"][name]["build"]["args"]
        for arg, variable in BASE_ARGS.items():
            assert args[arg] == f"${{{variable}:-python:3.11-slim}}", (name, arg)
    for name, default in (("postgres", "postgres:16"), ("nats", "nats:2.10-alpine")):
        assert compose["services"][name]["image"] == f"${{CBR_{name.upper()}_IMAGE:-{default}}}"


def test_local_images_are_the_ones_base_images_sh_builds():
    script = (DEPLOY / "base-images.sh").read_text()
    images = local_images()
    assert set(images) == {"CBR_PYTHON_IMAGE", "CBR_PYTHON_BUILD_IMAGE", "CBR_POSTGRES_IMAGE", "CBR_NATS_IMAGE"}
    for image in images.values():
        repo, tag = image.split(":")
        assert repo.startswith("cbr-local/") and f"{repo}:{tag.replace('bookworm', '$suite')}" in script, image
    assert "debootstrap --variant=minbase" in script
    for dockerfile in ("python", "python-build", "postgres", "nats"):
        assert (DEPLOY / "base" / f"{dockerfile}.Dockerfile").is_file() and f"{dockerfile}.Dockerfile" in script


def test_monitoring_the_standby_and_the_second_replicas_are_optional_profiles(compose):
    optional = {"prometheus": ["monitoring"], "grafana": ["monitoring"], "postgres-standby": ["standby"],
                **{f"{name}-2": ["replicas"] for name in SERVICES}}
    for name, svc in compose["services"].items():
        assert svc.get("profiles", []) == optional.get(name, []), name


def test_host_networking_override_binds_only_loopback_on_distinct_ports(compose):
    host = yaml.safe_load((DEPLOY / "docker-compose.host.yml").read_text())["services"]
    runs = {name for name, svc in compose["services"].items() if not svc.get("profiles")}
    assert set(host) == runs and all(svc["network_mode"] == "host" for svc in host.values())
    for name in runs:
        if "build" in compose["services"][name]:
            assert host[name]["build"] == {"network": "host"}, name
    listen = {}
    for name in SERVICES:
        env = host[name]["environment"]
        listen[name] = env["CBR_LISTEN_ADDR"]
        assert env["CBR_LISTEN_ADDR"].startswith("127.0.0.1:${CBR_HOST_") and \
            env["CBR_METRICS_ADDR"].startswith("127.0.0.1:${CBR_HOST_"), name
        probe = as_argv(host[name]["healthcheck"]["test"])
        assert probe[-1] == env["CBR_LISTEN_ADDR"], name
    for name in (*SERVICES, "worker", "migrate"):
        env = host[name]["environment"]
        assert "@127.0.0.1:${CBR_HOST_POSTGRES_PORT" in env["CBR_DATABASE_URL"], name
        assert env["CBR_NATS_URL"].startswith("nats://127.0.0.1:"), name
        for peer in SERVICES:
            assert env[f"CBR_{peer.upper()}_ADDR"] == listen[peer], (name, peer)
    assert host["worker"]["environment"]["CBR_METRICS_ADDR"] == "127.0.0.1:0"  # several on one network
    ports = [*(host[n]["environment"][k] for n in SERVICES for k in ("CBR_LISTEN_ADDR", "CBR_METRICS_ADDR")),
             host["postgres"]["environment"]["PGPORT"]]
    nats = host["nats"]["command"]
    ports += [nats[nats.index("-p") + 1], nats[nats.index("-m") + 1]]
    variables = [re.search(r"\$\{(\w+)", p).group(1) for p in ports]
    assert len(set(variables)) == len(variables) == 11
    assert nats[nats.index("-a") + 1] == "127.0.0.1"
    assert host["postgres"]["command"] == ["postgres", "-c", "listen_addresses=127.0.0.1"]
    assert nats[nats.index("-m") + 1] in " ".join(host["nats"]["healthcheck"]["test"])
