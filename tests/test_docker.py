"""Static checks of docker/compose.yaml and docker/Dockerfile (no Docker engine needed).

What ``docker compose config`` would catch plus what it would not: every command names a real program
and options it accepts, every URL and ``host:port`` points at a service on a port that service declares,
the storage URL matches the PostgreSQL service, GPU workers reserve NVIDIA devices, and the image
installs the way the README and Makefile do (torch first, then the package).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
BIN = Path(sys.executable).parent

CLI_COMMANDS = {"search", "studies", "best", "export", "sample", "tasks", "train", "evaluate"}
"""The ``tfg-search`` subcommands (the CLI's contract)."""
SEARCH_OPTIONS = {
    "--task",
    "--target",
    "--storage",
    "--study",
    "--executor",
    "--ray-address",
    "--gpus-per-trial",
    "--cpus-per-trial",
    "--device",
}
"""Options of ``tfg-search search`` that compose may use."""
SERVICES = {"postgres", "ray-head", "ray-worker", "launcher", "dashboard"}
WELL_KNOWN_PORTS = {"postgres": 5432, "ray-head": 6379, "dashboard": 8080}
TEST_ENV = {"POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef"}

_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


# -- a small `docker compose config`: interpolation ------------------------------------------------


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` variable is unset or empty."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation over a parsed YAML tree (``$$``, ``${V}``, ``:-``, ``-``, ``:?``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else str(current)
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return "" if current is None else current

    return _VAR.sub(sub, value)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml with anchors resolved and variables interpolated from ``TEST_ENV`` and defaults."""
    return interpolate(raw_compose(), TEST_ENV)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# -- commands --------------------------------------------------------------------------------------


def command_lines(service: Mapping[str, Any]) -> list[list[str]]:
    """The programs a service runs, as argv lists (``sh -c`` scripts are split at ``&&`` and ``;``)."""
    cmd = service.get("command")
    if cmd is None:
        return []
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
    if argv[:2] != ["sh", "-c"]:
        return [argv]
    assert len(argv) == 3, f"sh -c takes exactly one script: {argv}"
    lines: list[list[str]] = []
    for part in re.split(r"&&|;", argv[2]):
        words = shlex.split(part)
        if words and words[0] == "exec":
            words = words[1:]
        if words:
            lines.append(words)
    return lines


def all_command_lines(compose: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    for name, service in services(compose).items():
        for argv in command_lines(service):
            yield name, argv


def long_options(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def option_value(argv: list[str], option: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def console_scripts() -> set[str]:
    """Console scripts declared by the installed tfg-search (pyproject's [project.scripts])."""
    return {
        ep.name for ep in metadata.distribution("tfg-search").entry_points if ep.group == "console_scripts"
    }


def test_services_present(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == SERVICES


def test_every_program_is_a_real_entry_point(compose: dict[str, Any]) -> None:
    scripts = console_scripts()
    seen = set()
    for name, argv in all_command_lines(compose):
        program = argv[0]
        seen.add(program)
        if program in scripts:
            continue
        assert (BIN / program).exists() or shutil.which(program), f"{name}: {program!r} is not installed"
    assert {"tfg-search", "ray", "optuna-dashboard"} <= seen
    assert "tfg-search" in scripts


def test_tfg_search_commands_are_cli_commands(compose: dict[str, Any]) -> None:
    for name, argv in all_command_lines(compose):
        if argv[0] != "tfg-search":
            continue
        assert argv[1] in CLI_COMMANDS, f"{name}: unknown tfg-search command {argv[1]!r}"
        if argv[1] == "search":
            assert long_options(argv) <= SEARCH_OPTIONS, f"{name}: {long_options(argv) - SEARCH_OPTIONS}"
            assert option_value(argv, "--executor") == "ray"


@pytest.mark.slow
def test_tfg_search_search_accepts_the_options(compose: dict[str, Any]) -> None:
    """Against the real CLI, once its ``search`` command can be imported."""
    used = set().union(
        *(long_options(a) for _, a in all_command_lines(compose) if a[:2] == ["tfg-search", "search"])
    )
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [str(BIN / "tfg-search"), "search", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    if result.returncode != 0 and ("ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr):
        pytest.skip(f"the CLI does not import yet: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stdout + result.stderr
    missing = {opt for opt in used | {"--storage"} if opt not in result.stdout}
    assert not missing, f"`tfg-search search` lacks {sorted(missing)}"


def test_ray_commands_use_real_options(compose: dict[str, Any]) -> None:
    from ray.scripts.scripts import cli

    for name, argv in all_command_lines(compose):
        if argv[0] != "ray":
            continue
        command = cli.commands.get(argv[1])
        assert command is not None, f"{name}: `ray {argv[1]}` does not exist"
        accepted = {opt for param in command.params for opt in param.opts}
        assert long_options(argv) <= accepted, (
            f"{name}: ray {argv[1]} rejects {long_options(argv) - accepted}"
        )
        if argv[1] == "start" and len(command_lines(services(compose)[name])) == 1:
            assert "--block" in argv, f"{name}: without --block the container exits at once"
    # healthchecks run `ray status`
    head_check = services(compose)["ray-head"]["healthcheck"]["test"]
    assert head_check[1:3] == ["ray", "status"]


def test_optuna_dashboard_options(compose: dict[str, Any]) -> None:
    # its argparse options, read from the source rather than paying for the package's import
    help_text = Path(
        str(metadata.distribution("optuna-dashboard").locate_file("optuna_dashboard/_cli.py"))
    ).read_text()
    (argv,) = command_lines(services(compose)["dashboard"])
    assert argv[0] == "optuna-dashboard"
    for option in long_options(argv):
        assert f'"{option}"' in help_text, f"optuna-dashboard has no {option}"
    assert option_value(argv, "--host") == "0.0.0.0", "the dashboard must listen beyond the container"


# -- addresses -------------------------------------------------------------------------------------


def declared_ports(service: Mapping[str, Any]) -> set[int]:
    """Container ports a service declares: ``expose``, the container side of ``ports``, ``--port`` flags."""
    ports = {int(p) for p in service.get("expose", [])}
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).rsplit(":", 1)[-1].split("/")[0]))
    for argv in command_lines(service):
        if (value := option_value(argv, "--port")) is not None:
            ports.add(int(value))
    return ports


def strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for value in tree.values():
            yield from strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from strings(value)
    elif isinstance(tree, str):
        yield tree


def storage_urls(compose: dict[str, Any]) -> list[str]:
    found = [w for s in strings(services(compose)) for w in shlex.split(s) if "://" in w]
    assert found, "no URL in compose.yaml"
    return found


def host_port_targets(compose: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """(service using it, host, port) of every URL and every ``--address`` / ``--ray-address`` value."""
    for name, service in services(compose).items():
        for text in strings(service):
            for word in shlex.split(text):
                if "://" in word:
                    url = make_url(word)
                    yield name, str(url.host), int(url.port or 0)
        for argv in command_lines(service):
            for option in ("--address", "--ray-address"):
                value = option_value(argv, option)
                if value and value != "auto":
                    host, port = value.rsplit(":", 1)
                    yield name, host, int(port)


def test_well_known_ports(compose: dict[str, Any]) -> None:
    for name, port in WELL_KNOWN_PORTS.items():
        assert port in declared_ports(services(compose)[name]), f"{name} must declare port {port}"


def test_addresses_point_at_services_on_declared_ports(compose: dict[str, Any]) -> None:
    targets = list(host_port_targets(compose))
    assert {host for _, host, _ in targets} >= {"postgres", "ray-head"}
    for user, host, port in targets:
        assert host in services(compose), f"{user}: {host!r} is not a service"
        if host in ("127.0.0.1", "localhost"):
            continue
        assert port in declared_ports(services(compose)[host]), f"{user}: {host} does not declare {port}"


def test_storage_url_matches_postgres_service(compose: dict[str, Any]) -> None:
    env = services(compose)["postgres"]["environment"]
    urls = storage_urls(compose)
    assert len(set(urls)) == 1, "launcher and dashboard must use the same study database"
    url = make_url(urls[0])
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.database, url.password) == (
        env["POSTGRES_USER"],
        env["POSTGRES_DB"],
        env["POSTGRES_PASSWORD"],
    )
    for name in ("launcher", "ray-head"):  # the coordinator, and where `ray job submit` entrypoints run
        assert services(compose)[name]["environment"]["TFG_SEARCH_STORAGE"] == urls[0]


def test_password_is_never_written_down() -> None:
    raw = raw_compose()
    assert raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert TEST_ENV["POSTGRES_PASSWORD"] not in COMPOSE_FILE.read_text()
    for url in storage_urls(raw):
        assert "${POSTGRES_PASSWORD:?" in url
    with pytest.raises(MissingVariable, match=r"docker/\.env"):
        interpolate(raw, {})
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


# -- dependencies, GPUs, volumes -------------------------------------------------------------------


def test_depends_on_conditions(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    for name, service in svcs.items():
        for dep, spec in service.get("depends_on", {}).items():
            assert dep in svcs, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in svcs[dep], f"{name} waits for {dep} to be healthy; it has no check"
    expected = {
        "ray-worker": {"ray-head"},
        "launcher": {"postgres", "ray-head"},
        "dashboard": {"postgres"},
    }
    for name, deps in expected.items():
        assert set(svcs[name]["depends_on"]) == deps
    # no cycles
    order: list[str] = []
    pending = dict.fromkeys(svcs)
    while pending:
        ready = [n for n in pending if set(svcs[n].get("depends_on", {})) <= set(order)]
        assert ready, f"depends_on cycle among {sorted(pending)}"
        order += ready
        for n in ready:
            del pending[n]


def test_gpu_workers_reserve_nvidia_devices(compose: dict[str, Any]) -> None:
    devices = services(compose)["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    (device,) = devices
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert "count" in device or "device_ids" in device
    assert device.get("count", 1) == "all" or int(device["count"]) >= 1
    for name in ("ray-head", "launcher"):
        (argv, *_) = command_lines(services(compose)[name])
        assert "--num-gpus=0" in argv, f"{name} must not advertise GPUs"


def test_volumes_and_host_ports(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    published: list[str] = []
    for service in services(compose).values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"named volume {source!r} is not declared"
        for mapping in service.get("ports", []):
            published.append(str(mapping).rsplit(":", 1)[0])
    assert len(published) == len(set(published)), f"host ports published twice: {published}"
    for host_side in published:
        assert host_side.startswith("127.0.0.1:"), f"{host_side}: publish on the loopback only"


# -- image -----------------------------------------------------------------------------------------


def dockerfile_args() -> dict[str, str]:
    args = {}
    for match in re.finditer(r"^ARG\s+(\w+)(?:=(\"[^\"]*\"|\S+))?", DOCKERFILE.read_text(), re.M):
        args[match.group(1)] = (match.group(2) or "").strip('"')
    return args


def dockerfile_runs() -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def test_build_sections(compose: dict[str, Any]) -> None:
    args = dockerfile_args()
    built = [n for n, s in services(compose).items() if "build" in s]
    assert set(built) == SERVICES - {"postgres"}
    images = {services(compose)[n]["image"] for n in built}
    assert len(images) == 1, "all Ray nodes must run one image (same Python and Ray)"
    for name in built:
        build = services(compose)[name]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert set(build.get("args", {})) <= set(args), f"{name}: unknown build args"
    assert services(compose)["postgres"]["image"].startswith("postgres:15")


def test_dockerfile_args_and_base() -> None:
    args = dockerfile_args()
    assert args["BASE"] == "python:3.11-slim"
    assert "torch==2.13.0" in args["TORCH_SPEC"] and "whl/cpu" in args["TORCH_SPEC"]
    assert re.search(r"^FROM \$\{BASE\}", DOCKERFILE.read_text(), re.M)
    extras = metadata.distribution("tfg-search").metadata.get_all("Provides-Extra") or []
    assert set(args["EXTRAS"].split(",")) <= set(extras)
    assert {"postgres", "dashboard"} <= set(args["EXTRAS"].split(","))


def test_install_mirrors_readme() -> None:
    """torch first (from TORCH_SPEC), then the package with its extras, as the Makefile does."""
    runs = dockerfile_runs()
    torch_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \$\{?TORCH_SPEC", r))
    package_at = next(
        i for i, r in enumerate(runs) if re.search(r"pip install (-e )?\"\.\[\$\{EXTRAS\}\]\"", r)
    )
    assert torch_at < package_at
    make = (ROOT / "Makefile").read_text()
    assert make.index("$(TORCH_SPEC)") < make.index("pip install -q -e '.[dev]'")
    pinned = re.search(r"^TORCH_SPEC \?= (\S+)", make, re.M)
    assert pinned and pinned.group(1) in dockerfile_args()["TORCH_SPEC"], (
        "Dockerfile and Makefile pin torch alike"
    )
    copy_at = DOCKERFILE.read_text().index("COPY . /app")
    assert DOCKERFILE.read_text().index("${TORCH_SPEC}") < copy_at, (
        "torch layer must not depend on the source"
    )


def test_dockerignore_keeps_context_small() -> None:
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "docker/.env"} <= set(ignored)


def test_docker_compose_config_when_available() -> None:
    """The real `docker compose config`, where the compose plugin is installed (no engine needed)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed")
    env = {**os.environ, **TEST_ENV}
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
