"""Checks of the deployment files: deploy/Dockerfile, .dockerignore,
deploy/docker-compose.yml, deploy/turnserver.conf and deploy/nginx.conf.

The files are parsed without Docker. The real coturn, nginx, health check and
Docker build run where those programs are installed, and skip otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aioice import stun
from aioice.turn import make_integrity_key

from server.config import SETTINGS_HELP
from tests.support.certs import write_certificate
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
TURN_CONF = DEPLOY / "turnserver.conf"
NGINX_CONF = DEPLOY / "nginx.conf"

# What `pip install .` needs, and nothing more.
IMAGE_SOURCES = {
    "pyproject.toml",
    "README.md",
    "server",
    "signaling",
    "media",
    "public",
}

START_TIMEOUT_S = 30.0
TURN_SECRET = "deploy-test-secret-0123456789"
# REQUESTED-TRANSPORT value for UDP: protocol number 17 in the first byte.
UDP_TRANSPORT = 17 << 24


# Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, joining continuation lines.

    Comment and blank lines are skipped, also inside a continued instruction,
    as Docker does.
    """
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        keyword, _, arguments = " ".join(pending).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def dockerfile_instructions(keyword: str) -> list[Instruction]:
    return [i for i in parse_dockerfile(DOCKERFILE.read_text()) if i.keyword == keyword]


def copy_sources(instruction: Instruction) -> list[str]:
    """The source paths of a COPY or ADD, without its --flags and destination."""
    arguments = instruction.arguments
    words = json.loads(arguments) if arguments.startswith("[") else arguments.split()
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]


def healthcheck_command() -> str:
    """The shell-form command of the Dockerfile's HEALTHCHECK."""
    (healthcheck,) = dockerfile_instructions("HEALTHCHECK")
    match = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(.+)", healthcheck.arguments, re.DOTALL)
    assert match is not None, f"HEALTHCHECK has no CMD: {healthcheck.arguments!r}"
    command = match.group(1)
    assert not command.startswith("["), "the tests expect a shell-form HEALTHCHECK"
    return command


def test_dockerfile_base_is_slim_python() -> None:
    final_stage = dockerfile_instructions("FROM")[-1]
    image = next(w for w in final_stage.arguments.split() if not w.startswith("--"))
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(?:-\w+)?", image)
    assert match is not None, f"base image {image!r} is not a -slim Python image"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert required is not None
    image_version = (int(match.group(1)), int(match.group(2)))
    assert image_version >= (int(required.group(1)), int(required.group(2)))


def test_dockerfile_switches_to_non_root_user() -> None:
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    starts = [i.line for i in instructions if i.keyword in ("CMD", "ENTRYPOINT")]
    assert starts, "the Dockerfile has no CMD or ENTRYPOINT"
    users = [i for i in instructions if i.keyword == "USER"]
    assert any(u.line < min(starts) for u in users), (
        "no USER instruction comes before CMD or ENTRYPOINT"
    )
    # The last USER decides who the container runs as.
    user = users[-1].arguments.split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_healthcheck_requests_api_health() -> None:
    assert "/api/health" in healthcheck_command()


def test_dockerfile_exposes_port_3000() -> None:
    ports = [
        word.split("/")[0]
        for expose in dockerfile_instructions("EXPOSE")
        for word in expose.arguments.split()
    ]
    assert "3000" in ports


def test_dockerfile_copies_only_needed_sources() -> None:
    copies = dockerfile_instructions("COPY") + dockerfile_instructions("ADD")
    sources = [source for copy in copies for source in copy_sources(copy)]
    missing = [source for source in sources if not (ROOT / source).exists()]
    assert not missing, f"COPY sources not in the repository: {missing}"
    assert set(sources) == IMAGE_SOURCES


def test_dockerfile_entrypoint_is_callbridge_script() -> None:
    (entrypoint,) = dockerfile_instructions("ENTRYPOINT")
    command = json.loads(entrypoint.arguments)
    assert command[0] == "callbridge"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    assert "callbridge" in scripts
    module_name, _, function_name = scripts["callbridge"].partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, function_name, None))


def test_callbridge_script_prints_help() -> None:
    script = Path(sys.executable).parent / "callbridge"
    assert script.is_file(), (
        f"{script} is missing: reinstall with `pip install -e '.[dev]'`"
    )
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: callbridge")


# .dockerignore


def glob_to_regex(pattern: str) -> str:
    """Translate a .dockerignore pattern to a regular expression on paths."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return "".join(parts)


def dockerignore_excludes(path: str) -> bool:
    """Return whether `path` is left out of the Docker build context.

    Follows Docker's rules for the patterns .dockerignore uses: the last
    matching pattern wins, `!` re-includes, `**/` matches any number of
    folders, and a pattern that matches a folder also matches all below it.
    Character classes (`[a-z]`) are not supported.
    """
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        include = pattern.startswith("!")
        regex = glob_to_regex(pattern.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not include
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "deploy/.env",
        "certs/privkey.pem",
        "server/__pycache__/app.cpython-311.pyc",
        "tests/artifacts/call.wav",
        "bench/results/run.json",
        "callbridge.egg-info/PKG-INFO",
        ".mypy_cache/3.11/server",
    ],
)
def test_dockerignore_excludes_local_files(path: str) -> None:
    assert dockerignore_excludes(path)


@pytest.mark.parametrize(
    "path",
    [
        *sorted(IMAGE_SOURCES),
        "server/app.py",
        "media/engines/realtime.py",
        "public/index.html",
        "public/js/main.js",
        "deploy/Dockerfile",
    ],
)
def test_dockerignore_keeps_image_sources(path: str) -> None:
    assert not dockerignore_excludes(path)


# docker-compose.yml


def compose_services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def node_services() -> dict[str, dict[str, Any]]:
    """The services built from deploy/Dockerfile."""
    nodes = {}
    for name, service in compose_services().items():
        build = service.get("build")
        if isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile":
            nodes[name] = service
    return nodes


def turn_service() -> dict[str, Any]:
    services = compose_services().values()
    turns = [s for s in services if str(s.get("image", "")).startswith("coturn/")]
    assert len(turns) == 1, f"expected one coturn service, found {len(turns)}"
    return turns[0]


def node_environment(node: dict[str, Any]) -> dict[str, str]:
    environment = node.get("environment", {})
    assert isinstance(environment, dict), "write node environments as a mapping"
    return {str(name): str(value) for name, value in environment.items()}


def test_compose_has_redis_and_two_nodes() -> None:
    assert "redis" in compose_services()
    assert len(node_services()) >= 2


def test_compose_turn_service_uses_coturn_image() -> None:
    image = str(turn_service()["image"])
    assert image.startswith("coturn/coturn")


def test_compose_turn_service_uses_host_network() -> None:
    assert turn_service().get("network_mode") == "host"


def test_compose_turn_service_mounts_turnserver_conf() -> None:
    service = turn_service()
    mounts = [str(volume).split(":") for volume in service.get("volumes", [])]
    configs = [m for m in mounts if (DEPLOY / m[0]).resolve() == TURN_CONF]
    assert len(configs) == 1, f"no volume mounts {TURN_CONF.name}: {mounts}"
    assert TURN_CONF.is_file()
    command = [str(word) for word in service["command"]]
    assert "-c" in command
    assert command[command.index("-c") + 1] == configs[0][1]


def test_compose_turn_secret_comes_from_environment() -> None:
    command = [str(word) for word in turn_service()["command"]]
    secrets = [w for w in command if w.startswith("--static-auth-secret=")]
    assert len(secrets) == 1
    assert secrets[0].startswith("--static-auth-secret=${TURN_SECRET")


def test_compose_nodes_get_turn_settings() -> None:
    listening_port = turn_conf()["listening-port"][0]
    for name, node in node_services().items():
        environment = node_environment(node)
        assert "TURN_URLS" in environment, f"{name} has no TURN_URLS"
        assert environment.get("TURN_SECRET", "").startswith("${TURN_SECRET"), (
            f"{name} does not take TURN_SECRET from the environment"
        )
        for url in environment["TURN_URLS"].split(","):
            match = re.fullmatch(r"turns?:.+:(\d+)(?:\?transport=(?:udp|tcp))?", url)
            assert match is not None, f"{name} has an invalid TURN URL {url!r}"
            assert match.group(1) == listening_port, f"{name}: {url!r}"


def test_compose_node_settings_are_known() -> None:
    known = {setting.name for setting in SETTINGS_HELP}
    for name, node in node_services().items():
        unknown = sorted(set(node_environment(node)) - known)
        assert not unknown, f"{name} sets variables the server ignores: {unknown}"


def test_compose_nodes_keep_dockerfile_healthcheck() -> None:
    for name, node in node_services().items():
        assert "healthcheck" not in node, f"{name} overrides the HEALTHCHECK"


def test_compose_config_is_valid(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30
    )
    if version.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TURN_SECRET": TURN_SECRET,
    }
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# turnserver.conf


def turn_conf() -> dict[str, list[str]]:
    """Parse turnserver.conf into option names and values ("" for a flag)."""
    options: dict[str, list[str]] = {}
    for line in TURN_CONF.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        options.setdefault(name.strip(), []).append(value.strip())
    return options


def is_denied_peer(address: str) -> bool:
    """Return whether a denied-peer-ip entry (address or low-high) covers it."""
    ip = ipaddress.ip_address(address)
    for entry in turn_conf().get("denied-peer-ip", []):
        low_text, _, high_text = entry.partition("-")
        low = ipaddress.ip_address(low_text)
        high = ipaddress.ip_address(high_text or low_text)
        if low.version == ip.version and int(low) <= int(ip) <= int(high):
            return True
    return False


def test_turn_conf_uses_rest_api_credentials() -> None:
    options = turn_conf()
    assert "use-auth-secret" in options
    assert "lt-cred-mech" not in options
    assert "user" not in options


def test_turn_conf_commits_no_secret() -> None:
    assert "static-auth-secret" not in turn_conf()


def test_turn_conf_has_realm() -> None:
    assert turn_conf().get("realm", [""])[0] != ""


@pytest.mark.parametrize(
    "flag",
    ["fingerprint", "no-cli", "no-multicast-peers", "no-tlsv1", "no-tlsv1_1"],
)
def test_turn_conf_sets_flag(flag: str) -> None:
    assert turn_conf().get(flag) == [""]


def test_turn_conf_keeps_loopback_peers_off() -> None:
    assert "allow-loopback-peers" not in turn_conf()


def test_turn_conf_relay_port_range() -> None:
    options = turn_conf()
    assert options["listening-port"] == ["3478"]
    assert int(options["min-port"][0]) < int(options["max-port"][0])


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.1",
        "10.0.0.1",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "::1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "fd00:ec2::254",
        "fe80::1",
    ],
)
def test_turn_conf_denies_private_peer(address: str) -> None:
    assert is_denied_peer(address)


@pytest.mark.parametrize("address", ["1.1.1.1", "93.184.215.14", "2606:4700::1111"])
def test_turn_conf_allows_public_peer(address: str) -> None:
    assert not is_denied_peer(address)


# coturn with turnserver.conf


@dataclass(frozen=True)
class TurnServer:
    port: int
    log_file: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def stun_transaction(
    sock: socket.socket, server: tuple[str, int], request: stun.Message
) -> stun.Message:
    """Send a request over UDP up to 3 times and return its response."""
    data = bytes(request)
    for _ in range(3):
        sock.sendto(data, server)
        try:
            reply, _ = sock.recvfrom(4096)
        except TimeoutError:
            continue
        response = stun.parse_message(reply)
        if response.transaction_id == request.transaction_id:
            return response
    raise AssertionError(f"no STUN response from {server} after 3 tries")


def rest_credentials(secret: str, expires_at: int) -> tuple[str, str]:
    """A TURN REST API username and password, as the nodes make them."""
    username = f"{expires_at}:deploy-test"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def binding_request() -> stun.Message:
    return stun.Message(stun.Method.BINDING, stun.Class.REQUEST)


def allocate_request() -> stun.Message:
    return stun.Message(
        stun.Method.ALLOCATE,
        stun.Class.REQUEST,
        attributes={"REQUESTED-TRANSPORT": UDP_TRANSPORT},
    )


@dataclass
class Allocation:
    response: stun.Message
    username: str
    realm: str
    nonce: bytes
    key: bytes


def allocate(
    sock: socket.socket, server: tuple[str, int], secret: str, expires_at: int
) -> Allocation:
    """Run the two-step Allocate: challenge, then the signed request."""
    challenge = stun_transaction(sock, server, allocate_request())
    realm = str(challenge.attributes["REALM"])
    nonce = bytes(challenge.attributes["NONCE"])
    username, password = rest_credentials(secret, expires_at)
    key = make_integrity_key(username, realm, password)
    request = allocate_request()
    request.attributes.update({"USERNAME": username, "REALM": realm, "NONCE": nonce})
    request.add_message_integrity(key)
    response = stun_transaction(sock, server, request)
    return Allocation(response, username, realm, nonce, key)


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        yield sock


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    """Run coturn with deploy/turnserver.conf on a free port of 127.0.0.1."""
    executable = shutil.which("turnserver")
    if executable is None:
        pytest.skip("turnserver (coturn) is not installed; .ci/run installs it")
    folder = tmp_path_factory.mktemp("coturn")
    server = TurnServer(port=free_port(), log_file=folder / "turnserver.log")
    command = [
        executable,
        "-c",
        str(TURN_CONF),
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={server.port}",
        f"--static-auth-secret={TURN_SECRET}",
        "--log-file=stdout",
        "--simple-log",
        f"--pidfile={folder / 'turnserver.pid'}",
        f"--db={folder / 'turndb'}",
    ]
    with server.log_file.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_binding(process, server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for_binding(process: subprocess.Popen[bytes], server: TurnServer) -> None:
    """Return once coturn responds to a Binding request, or fail after a timeout."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"turnserver exited with {process.returncode}:\n{server.log()}"
                )
            request = binding_request()
            sock.sendto(bytes(request), server.address)
            try:
                reply, _ = sock.recvfrom(4096)
            except (TimeoutError, ConnectionRefusedError):
                continue
            if stun.parse_message(reply).transaction_id == request.transaction_id:
                return
    pytest.fail(
        f"turnserver did not answer within {START_TIMEOUT_S} s:\n{server.log()}"
    )


def test_coturn_reads_config_without_errors(coturn: TurnServer) -> None:
    problems = [
        line
        for line in coturn.log().splitlines()
        if "Bad configuration format" in line or "ERROR" in line
    ]
    assert not problems


def test_coturn_responds_to_udp_binding(
    coturn: TurnServer, udp_socket: socket.socket
) -> None:
    response = stun_transaction(udp_socket, coturn.address, binding_request())
    assert response.message_class == stun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == udp_socket.getsockname()


def test_coturn_responds_to_tcp_binding(coturn: TurnServer) -> None:
    request = binding_request()
    with socket.create_connection(coturn.address, timeout=5) as sock:
        sock.sendall(bytes(request))
        header = recv_exactly(sock, stun.HEADER_LENGTH)
        body_length = int.from_bytes(header[2:4], "big")
        response = stun.parse_message(header + recv_exactly(sock, body_length))
    assert response.transaction_id == request.transaction_id
    assert response.message_class == stun.Class.RESPONSE


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "coturn closed the TCP connection"
        data += chunk
    return data


def test_coturn_challenges_unsigned_allocate(
    coturn: TurnServer, udp_socket: socket.socket
) -> None:
    response = stun_transaction(udp_socket, coturn.address, allocate_request())
    assert response.error_code == 401
    assert response.attributes["REALM"] == turn_conf()["realm"][0]
    assert response.attributes.get("NONCE")


def test_coturn_allocates_with_rest_credentials(
    coturn: TurnServer, udp_socket: socket.socket
) -> None:
    expires_at = int(time.time()) + 600
    allocation = allocate(udp_socket, coturn.address, TURN_SECRET, expires_at)
    assert allocation.response.message_class == stun.Class.RESPONSE, (
        f"error {allocation.response.error_code}:\n{coturn.log()}"
    )
    assert allocation.response.check_message_integrity(allocation.key)
    host, port = allocation.response.attributes["XOR-RELAYED-ADDRESS"]
    assert host == "127.0.0.1"
    options = turn_conf()
    assert int(options["min-port"][0]) <= port <= int(options["max-port"][0])


def test_coturn_rejects_wrong_secret(
    coturn: TurnServer, udp_socket: socket.socket
) -> None:
    expires_at = int(time.time()) + 600
    allocation = allocate(udp_socket, coturn.address, "another-secret-0123", expires_at)
    assert allocation.response.error_code == 401


def test_coturn_rejects_expired_credentials(
    coturn: TurnServer, udp_socket: socket.socket
) -> None:
    expires_at = int(time.time()) - 60
    allocation = allocate(udp_socket, coturn.address, TURN_SECRET, expires_at)
    assert allocation.response.error_code == 401


def test_coturn_forbids_permission_to_private_peers(
    coturn: TurnServer, udp_socket: socket.socket
) -> None:
    # CreatePermission only changes state in coturn and sends nothing to the
    # peer, so these addresses are never contacted.
    expires_at = int(time.time()) + 600
    allocation = allocate(udp_socket, coturn.address, TURN_SECRET, expires_at)
    assert allocation.response.message_class == stun.Class.RESPONSE
    peers = ["10.0.0.1", "127.0.0.1", "169.254.169.254", "192.168.1.1"]
    codes = {}
    for peer in peers:
        request = stun.Message(
            stun.Method.CREATE_PERMISSION,
            stun.Class.REQUEST,
            attributes={
                "XOR-PEER-ADDRESS": (peer, 0),
                "USERNAME": allocation.username,
                "REALM": allocation.realm,
                "NONCE": allocation.nonce,
            },
        )
        request.add_message_integrity(allocation.key)
        codes[peer] = stun_transaction(udp_socket, coturn.address, request).error_code
    assert codes == dict.fromkeys(peers, 403)


# nginx.conf


def test_nginx_conf_passes_nginx_check(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed")
    (tmp_path / "logs").mkdir()
    error_log = tmp_path / "logs" / "error.log"
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(NGINX_CONF), "-e", str(error_log)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_nginx_conf_does_not_pass_metrics() -> None:
    # Each node's metrics describe that node only, and are not for the public.
    text = NGINX_CONF.read_text()
    assert re.search(r"location = /metrics \{\s*return 404;\s*\}", text)


# The HEALTHCHECK against a real server


def run_healthcheck(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the HEALTHCHECK command as Docker does, with `python` from this venv."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["/bin/sh", "-c", healthcheck_command()],
        capture_output=True,
        text=True,
        env={"PATH": path, **environment},
        timeout=10,
    )


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return write_certificate(tmp_path, common_name="localhost")


@pytest.mark.parametrize("tls", ["off", "self-signed", "certificate file"])
def test_healthcheck_passes_on_running_server(
    tls: str, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    port = str(free_port())
    tls_environment = {
        "off": {},
        "self-signed": {"TLS_SELF_SIGNED": "true"},
        "certificate file": {
            "TLS_CERT_FILE": str(certificate[0]),
            "TLS_KEY_FILE": str(certificate[1]),
        },
    }[tls]
    server_environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HOST": "127.0.0.1",
        "PORT": port,
        "SHUTDOWN_GRACE_S": "0",
        **tls_environment,
    }
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "server"],
            cwd=tmp_path,
            env=server_environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        result = wait_for_healthy(server, {"PORT": port, **tls_environment})
        log_text = log_file.read_text(errors="replace")
        assert result.returncode == 0, f"{result.stderr}\nserver log:\n{log_text}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def wait_for_healthy(
    server: subprocess.Popen[bytes], environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the health check until it passes, the server exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    result = run_healthcheck(environment)
    while result.returncode != 0 and time.monotonic() < deadline:
        if server.poll() is not None:
            break
        time.sleep(0.25)
        result = run_healthcheck(environment)
    return result


def test_healthcheck_fails_without_server() -> None:
    result = run_healthcheck({"PORT": str(free_port())})
    assert result.returncode == 1


# Docker build


@pytest.mark.timeout(1800)
def test_docker_image_builds_and_turns_healthy() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode:
        pytest.skip("no Docker daemon: `docker info` failed")
    base_image = dockerfile_instructions("FROM")[-1].arguments.split()[-1]
    inspect = subprocess.run(
        [docker, "image", "inspect", base_image], capture_output=True, timeout=30
    )
    if inspect.returncode != 0:
        pytest.skip(f"{base_image} is not pulled, and this test does not pull it")
    build = subprocess.run(
        [docker, "build", "--quiet", "-f", str(DOCKERFILE), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    image = build.stdout.strip().splitlines()[-1]
    try:
        check_image(docker, image)
    finally:
        subprocess.run([docker, "image", "rm", image], capture_output=True, timeout=60)


def check_image(docker: str, image: str) -> None:
    """Run `--help`, then a container without network until it is healthy."""
    help_run = subprocess.run(
        [docker, "run", "--rm", "--network", "none", image, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert help_run.stdout.startswith("usage: callbridge")
    command = [docker, "run", "--detach", "--network", "none"]
    command += ["--health-interval", "2s", "--env", "HOST=127.0.0.1", image]
    start = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    container = start.stdout.strip()
    try:
        status = wait_for_container_health(docker, container)
        assert status == "healthy"
    finally:
        subprocess.run(
            [docker, "rm", "--force", container], capture_output=True, timeout=60
        )


def wait_for_container_health(docker: str, container: str) -> str:
    deadline = time.monotonic() + 120
    status = ""
    while time.monotonic() < deadline:
        inspect = subprocess.run(
            [docker, "inspect", "--format", "{{.State.Health.Status}}", container],
            capture_output=True,
            text=True,
            timeout=30,
        )
        status = inspect.stdout.strip()
        if status in ("healthy", "unhealthy"):
            return status
        time.sleep(2)
    return status


def test_wheel_carries_the_page(tmp_path: Path) -> None:
    """An installed server finds its page without the source tree."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]

    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("callbridge-*.whl")

    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-compile", "--target",
         str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip

    # -S skips site-packages and with it the editable install of the source
    # tree; the dependencies come from this environment's site-packages.
    dependencies = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import server.app as a; print(a.PUBLIC_DIR)"],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{target}{os.pathsep}{dependencies}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    public = Path(result.stdout.strip())

    assert public == target / "server" / "public"
    assert (public / "index.html").is_file()
    assert (public / "js" / "main.js").is_file()
