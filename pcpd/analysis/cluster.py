"""``pcpd experiment CONFIG --scheduler tcp://HOST:8786``: an experiment's runs on a Dask cluster.

Each point of the plan (one policy x sweep value x repetition: what
``pcpd.analysis.experiment.run_point`` runs) is one task on an existing Dask
distributed cluster.  The runs come back as the same ``RunRecord`` s a local
experiment makes, in plan order, so results.json, the CSV and the report are
written by the same code; each record names the host that ran it and the
results keep each host's machine facts (``pcpd.analysis.results.machine_metadata``).

Workers, one per machine, are started with the ``pcpd-node`` resource::

    dask worker tcp://HOST:8786 --nworkers 1 --nthreads 1 --resources pcpd-node=1

A real-mode point owns a whole machine (its workers are pinned to the
machine's CPUs and its figures are the machine's), so every such task asks
for one ``pcpd-node``, and a node runs one point at a time.  A virtual-mode
point models its CPUs in one process and its figures do not depend on the
machine, so it asks for no resource: any worker thread takes one, several
share a node, and workers need not offer ``pcpd-node`` at all.

On the node, the task runs the point in a fresh ``python -m
pcpd.analysis.cluster`` child: the daemon installs signal handlers, which
only a main thread may (Dask runs tasks in a thread), and starts processes of
its own, which is best done from a process that holds no Dask state.  The
child dies with its worker (``PR_SET_PDEATHSIG``: SIGTERM, which stops a run
cleanly), so a lost worker leaves no point running beside the rerun.

Failures: a point whose child fails (killed, interrupted, an error) raises,
and Dask reruns it up to ``RETRIES`` more times; a worker that dies or drops
off mid-point has its task rescheduled by the scheduler, up to its
``distributed.scheduler.allowed-failures`` (3 by default), after which the
experiment fails.  A mistake no rerun can fix (the config names CPUs the node
lacks) stops the experiment with that message (exit 2).

Imports: the standard library, ``pcpd.analysis`` (experiment, plan, progress, results),
``pcpd.errors``, ``pcpd.logs``; Dask (``distributed``) only in the functions
that talk to the cluster, so that the child and a pcpd without Dask never
import it.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from pcpd.analysis.experiment import Finished, run_point
from pcpd.analysis.plan import Plan, Point
from pcpd.analysis.progress import Progress
from pcpd.analysis.results import RunRecord, environment, host_name
from pcpd.config.load import settings_from_dict, settings_to_dict
from pcpd.errors import PcpdError, UsageError
from pcpd.logs import configure_daemon_logging

if TYPE_CHECKING:
    import distributed

NODE = "pcpd-node"                # the worker resource a real-mode point takes whole
RETRIES = 2                       # reruns of a point whose child failed (worker losses: the scheduler's)
CONNECT_TIMEOUT = 10.0            # seconds to reach the scheduler before giving up
PARENT_ENV = "PCPD_POINT_PARENT"  # the worker's pid: the child checks it is still its parent
PR_SET_PDEATHSIG = 1              # <linux/prctl.h>
EXIT_USAGE = 2                    # the child's exit status for a mistake no rerun can fix
INSTALL = "pip install 'dask[distributed]' (pcpd's cluster extra)"

# [tcp|tls|ws|wss://]host:port, host a name, an IPv4 address or a bracketed IPv6 one
ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z0-9+.-]+)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
                     r":(?P<port>[0-9]{1,5})$")
SCHEMES = ("tcp", "tls", "ws", "wss")


def point_resources(plan: Plan) -> dict[str, float]:
    """The Dask resources one point of ``plan`` needs.

    A real-mode run measures a whole machine: it takes the node's one
    ``pcpd-node``.  A virtual-mode run models its CPUs instead of owning them
    and its figures are the same on any machine, so several may share a node:
    it asks for no resource ({}), and any worker thread may take it.
    """
    return {} if plan.virtual else {NODE: 1}


def worker_command(address: str) -> str:
    """How to start the worker of one machine for the scheduler at ``address``."""
    return f"dask worker {address} --nworkers 1 --nthreads 1 --resources {NODE}=1"


def check_address(address: str) -> None:
    """Raise UsageError unless ``address`` reads as a scheduler address, ``tcp://HOST:PORT``."""
    match = ADDRESS.match(address)
    if not match:
        raise UsageError(f"--scheduler {address}: expected a scheduler address such as tcp://HOST:8786")
    scheme = match["scheme"] or "tcp"
    if scheme not in SCHEMES:
        raise UsageError(f"--scheduler {address}: unsupported protocol {scheme!r}; "
                         f"use one of {', '.join(SCHEMES)}")
    if not 0 < int(match["port"]) < 65536:
        raise UsageError(f"--scheduler {address}: port {match['port']} is out of range (1-65535)")


def connect(address: str, timeout: float | None = None, *, whole_nodes: bool = True) -> Cluster:
    """A connection to the scheduler at ``address`` with at least one ``pcpd-node`` worker
    (any worker unless ``whole_nodes``: virtual-mode points take no resource).

    Raises UsageError, before anything runs, for a malformed or unreachable
    address, a cluster without such a worker, a worker that cannot run this
    pcpd, or a Python without Dask.
    """
    check_address(address)
    try:
        import distributed
    except ImportError:
        raise UsageError(f"--scheduler needs Dask distributed, which is not installed: {INSTALL}") from None
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT if timeout is None else timeout,
                                    set_as_default=False)
    except (OSError, TimeoutError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"--scheduler {address}: cannot reach the scheduler: {first}") from None
    cluster = Cluster(address, client, whole_nodes)
    try:
        cluster.check_workers()
    except BaseException:
        cluster.close()
        raise
    return cluster


@dataclass
class Cluster:
    """A client of one Dask scheduler, running experiment points on its ``pcpd-node`` workers."""

    address: str
    client: distributed.Client
    whole_nodes: bool = True                                # points take a pcpd-node (real mode)
    workers: dict[str, str] = field(default_factory=dict)   # worker address -> its host
    notes: list[str] = field(default_factory=list)          # warnings about the cluster, for stderr

    def check_workers(self) -> None:
        """Find the workers that may run points (those with a ``pcpd-node`` when points take one)
        and check that each runs this pcpd (UsageError if not)."""
        info = self.client.scheduler_info(n_workers=-1)
        self.workers = {addr: str(w.get("host", addr)) for addr, w in info["workers"].items()
                        if not self.whole_nodes or (w.get("resources") or {}).get(NODE, 0) >= 1}
        if not self.workers:
            raise UsageError(self._no_worker())
        self._check_versions()
        if self.whole_nodes:
            self._note_shared_hosts()

    def _no_worker(self) -> str:
        """What to say when no worker may run a point, and how to start one."""
        if not self.whole_nodes:
            return (f"--scheduler {self.address}: the cluster has no worker; start one with: "
                    f"{worker_command(self.address)}")
        return (f"--scheduler {self.address}: no worker offers the {NODE} resource; "
                f"start one on each machine with: {worker_command(self.address)}")

    def _check_versions(self) -> None:
        """Every worker imports pcpd, and the same pcpd as this one (UsageError if not)."""
        try:
            environments = self.client.run(environment, workers=list(self.workers))
        except Exception as err:   # anything a worker raises comes back: most often pcpd missing there
            raise UsageError(f"--scheduler {self.address}: a worker cannot run pcpd "
                             f"({type(err).__name__}: {err}); install this pcpd on every worker") from None
        for addr, env in environments.items():
            if env.get("pcpd_version") != environment()["pcpd_version"]:
                raise UsageError(f"--scheduler {self.address}: worker {addr} runs pcpd "
                                 f"{env.get('pcpd_version')}, this is pcpd {environment()['pcpd_version']}; "
                                 "install the same pcpd on every worker")

    def _note_shared_hosts(self) -> None:
        """Note each machine where several workers offer a node: their points compete for its CPUs."""
        by_host: dict[str, int] = {}
        for host in self.workers.values():
            by_host[host] = by_host.get(host, 0) + 1
        for host, count in sorted(by_host.items()):
            if count > 1:
                self.notes.append(f"{count} workers on {host} offer {NODE}: their points run on that machine "
                                  "at the same time, so each competes with the others for its CPUs")

    def run(self, plan: Plan, points: list[Point], progress: Progress | None, log_stream: TextIO,
            finished: Finished) -> None:
        """Run every point as one task, calling ``finished(i, record, host, environment)`` as the run
        of ``points[i]`` comes back.

        A point's log lines and summary go to ``log_stream`` under a header
        naming its host, in the order the points finish.  On an error or ^C
        the points not yet started are cancelled (Dask cannot stop a running
        task: those finish on their nodes, and their results are dropped).
        """
        import distributed

        self._announce(len(points))
        futures = self._submit(plan, points)
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            # this client is not Dask's default (set_as_default=False): name its loop
            for future in distributed.as_completed(futures, loop=self.client.loop):
                i = index[future.key]
                outcome = self._outcome(future, points[i], distributed.KilledWorker)
                record = _record(points[i], outcome)
                finished(i, record, outcome.host, outcome.environment)
                log_stream.write(f"--- {points[i].label}: on {outcome.host} ---\n{outcome.log}")
                log_stream.flush()
                if progress:
                    progress.finish(f"{points[i].label} on {outcome.host}", record)
        finally:
            self.client.cancel([future for future in futures if not future.done()])

    def _announce(self, runs: int) -> None:
        """The cluster's notes, and where the runs go, on stderr."""
        for note in self.notes:
            print(f"pcpd experiment: warning: {note}", file=sys.stderr, flush=True)
        offering = f"with {NODE} " if self.whole_nodes else ""
        print(f"pcpd experiment: {runs} runs on {self.address}: {len(self.workers)} worker(s) "
              f"{offering}on {', '.join(sorted(set(self.workers.values())))}", file=sys.stderr, flush=True)

    def _submit(self, plan: Plan, points: list[Point]) -> list[distributed.Future]:
        """One task per point, under keys unique to this experiment on a shared scheduler."""
        batch = uuid.uuid4().hex[:8]
        return [self.client.submit(run_remote, plan, point, key=f"pcpd-point-{batch}-{i}",
                                   resources=point_resources(plan), retries=RETRIES, pure=False)
                for i, point in enumerate(points)]

    @staticmethod
    def _outcome(future: distributed.Future, point: Point, killed: type[Exception]) -> PointOutcome:
        """The future's outcome; a point that failed every try is a PcpdError (exit 1) naming it."""
        try:
            return future.result()
        except killed:
            raise PcpdError(f"{point.label}: its worker was lost every time it ran the point (the "
                            "scheduler's distributed.scheduler.allowed-failures); see the workers' logs") from None
        except PointFailed as err:
            raise PcpdError(f"{point.label}: {err} (and on each of its {RETRIES} reruns)") from None
        except (KeyboardInterrupt, PcpdError):
            raise
        except Exception as err:   # whatever else a worker raised reaches us as itself: keep it one line
            raise PcpdError(f"{point.label}: {type(err).__name__}: {err}") from None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# On the node.

class PointFailed(PcpdError):
    """A point's child did not finish its run (killed, interrupted, failed): Dask reruns the task."""


@dataclass(frozen=True)
class PointOutcome:
    """What a task hands back: the run, the machine it ran on, its log."""

    host: str
    environment: dict[str, Any]           # ``results.environment()`` of that host
    log: str                              # the daemon's and workers' log lines, then its summary
    record: RunRecord | None = None
    error: str = ""                       # a mistake no rerun can fix (the child exited 2)



def _record(point: Point, outcome: PointOutcome) -> RunRecord:
    """The run record a point's task returned; a UsageError if the point failed there or its node
    runs another pcpd."""
    if outcome.error:
        raise UsageError(f"{point.label}: on {outcome.host}: {outcome.error}")
    assert outcome.record is not None             # run_remote returns a record or an error
    if outcome.environment.get("pcpd_version") != environment()["pcpd_version"]:
        raise UsageError(f"{point.label}: {outcome.host} runs pcpd {outcome.environment.get('pcpd_version')}; "
                         "install the same pcpd on every worker")
    return outcome.record

def run_remote(plan: Plan, point: Point) -> PointOutcome:
    """The Dask task: run ``point`` in a child process of this worker and hand back its outcome.

    Raises PointFailed when the child did not finish its run, so that Dask
    reruns the point (``retries``).
    """
    env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
    child = subprocess.run([sys.executable, "-m", "pcpd.analysis.cluster"], input=pickle.dumps((plan, point)),
                           capture_output=True, env=env, check=False)
    log = child.stderr.decode(errors="replace")
    host = host_name()
    if child.returncode == 0:
        record, env = pickle.loads(child.stdout)
        return PointOutcome(host, env, log, record=record)
    last = log.strip().splitlines()[-1] if log.strip() else ""
    if child.returncode == EXIT_USAGE:
        return PointOutcome(host, environment(), log, error=last.removeprefix("error: "))
    how = (f"killed by {signal.Signals(-child.returncode).name}" if child.returncode < 0
           else f"exited {child.returncode}" + (f": {last}" if last else ""))
    raise PointFailed(f"on {host}, the run's process {how}")


def _die_with_parent(parent: int) -> None:
    """Have the kernel send us SIGTERM when the worker that started us dies.

    SIGTERM stops a running daemon cleanly (its workers drain, the arena is
    removed); without it a lost worker's point would run on beside its rerun.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:                    # it died before we asked
        raise SystemExit(f"the worker (pid {parent}) is gone")


def main() -> int:
    """The child: the pickled (plan, point) on stdin; the pickled (record, environment) on stdout.

    Log lines and the run's summary go to stderr; the exit status tells the
    task what happened (0 ran, 2 a mistake no rerun fixes, 1 or 130 failed).
    """
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _die_with_parent(int(parent))
    # the result travels on the original stdout alone: anything else that writes
    # to fd 1 (this process or the processes it starts) lands in the log instead
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    plan, point = pickle.load(sys.stdin.buffer)
    configure_daemon_logging(sys.stderr)
    try:
        # the config was checked against the CPUs of the machine that read it; a daemon
        # given CPUs this one lacks would restart its workers for ever, so check here too
        # (a virtual run's CPUs are its own, whatever this machine has)
        settings_from_dict(settings_to_dict(point.settings), point.settings.source,
                           available_cpus=point.settings.cpus if plan.virtual else None)
        record = run_point(point, plan, sys.stderr)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except PcpdError as err:
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    with result:
        pickle.dump((record, environment()), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
