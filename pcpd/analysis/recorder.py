"""An experiment's files as its runs end: results rewritten after each run, and resuming them.

``Recorder`` keeps the runs finished so far, in plan order, and rewrites
results.json and results.csv whole (atomically) as each one ends, so that a
^C, a failed run or a lost machine keeps what was done; the report follows at
the end, or when the experiment stops early, marked incomplete.
``previous_results`` reads such an incomplete experiment back for
``--resume``, after checking it ran the same plan (``PLAN_METADATA``).

Imports: ``pcpd.analysis`` (plan, results, report), ``pcpd.config``,
``pcpd.simulate`` (costs, engine); ``pcpd.simulate.output`` only when a
virtual run's files are written (it imports this module).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from pcpd.analysis import report
from pcpd.analysis.plan import VIRTUAL, Plan, plan_points
from pcpd.analysis.results import (
    Results,
    RunRecord,
    dump,
    dump_csv,
    environment,
    host_name,
    load,
    machine_metadata,
    write_atomic,
)
from pcpd.config.load import settings_hash, settings_to_dict
from pcpd.errors import UsageError
from pcpd.simulate.costs import CostModel
from pcpd.simulate.engine import ring_slots_for
from pcpd.spec import ModelSpec

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"


def output_names(plan: Plan) -> list[str]:
    """Every file an experiment may write in its directory (tuning.png: where runs carry a series)."""
    plot = report.SWEEP_PNG if plan.point_key else report.POLICIES_PNG
    return [RESULTS_JSON, RESULTS_CSV, report.REPORT, plot, report.TUNING_PNG]


def experiment_metadata(plan: Plan, command: str = "",
                        hosts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The results file's metadata: the machines that ran it, the settings as run, how they ran.

    ``hosts`` maps each host that ran a run to its ``environment()``; None: this machine alone.
    A virtual-mode plan adds ``mode`` and ``virtual`` (its CPUs, ring size and
    cost model), as ``pcpd simulate`` writes them; a real-mode plan has no
    ``mode`` (absent: real, for every reader).  ``pcp_cacheinfo`` holds each
    point's PCPF_FREE_HIGH_BATCH as this machine sets it (``ModelSpec.cacheinfo``):
    the flag can follow this machine's cache, which the config does not show.
    """
    settings = plan.settings
    hosts = {host_name(): environment()} if hosts is None else hosts
    meta = {
        **machine_metadata(hosts),
        "hosts": hosts,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "source": settings.source,
        "config_hash": settings_hash(settings),
        "seed": settings.seed,
        "policies": list(plan.policies),
        "repeat": plan.repeat,
        "duration": plan.duration,
        "warmup": plan.warmup,
        "ops": plan.ops,
        "sweep_key": plan.point_key or None,
        "sweep_values": plan.point_values,
        "eras": list(plan.eras),
        "runs_planned": plan.runs,
        "incomplete": False,
        "config": settings_to_dict(settings),
        "pcp_cacheinfo": [ModelSpec.from_settings(point, max(len(point.cpus), 1)).cacheinfo()
                          for _, point in plan.points],
    }
    if plan.virtual:
        cpus = len(settings.cpus)
        meta["mode"] = VIRTUAL
        meta["virtual"] = {"cpus": cpus, "ring_slots": ring_slots_for(cpus),
                           "costs": CostModel.from_settings(settings.simulate).as_ns()}
    return meta


# What must match for --resume to continue an experiment: its config as run, and how it runs.
PLAN_METADATA = ("config_hash", "seed", "policies", "repeat", "duration", "warmup", "ops", "sweep_key",
                 "sweep_values", "eras", "mode", "virtual", "runs_planned", "pcp_cacheinfo")


def run_key(point: Any, repetition: int, policy: str) -> str:
    """What identifies a run of a plan in its results: its point, repetition and policy."""
    return json.dumps([point, repetition, policy])


class Recorder:
    """An experiment's files in ``out``, rewritten whole (atomically) as each run ends.

    results.json and results.csv follow every run, so that a ^C, a crash or a
    lost machine keeps the runs already finished; report.md and its plot are
    written at the end, or at a ^C.  Until every run of the plan is in,
    ``metadata.incomplete`` is true and the report says so; ``--resume``
    continues from the runs in the file.
    """

    def __init__(self, plan: Plan, out: str, metadata: dict[str, Any], *, replace: bool,
                 previous: Results | None = None) -> None:
        self.plan, self.out, self.metadata, self.replace = plan, out, metadata, replace
        self.points = plan_points(plan)
        self.records: dict[int, RunRecord] = {}
        self.hosts: dict[str, dict[str, Any]] = {}
        if previous is not None:
            index = {run_key(p.value, p.repetition, p.policy): i for i, p in enumerate(self.points)}
            for run in previous.runs:
                i = index.get(run_key(run["point"], run["repetition"], run["policy"]))
                if i is not None:
                    self.records[i] = run
            self.hosts = {host: env for host, env in previous.metadata["hosts"].items()
                          if any(run.get("host") == host for run in self.records.values())}

    def pending(self) -> list[int]:
        """The indices in ``plan_points`` of the runs not yet finished, in plan order."""
        return [i for i in range(len(self.points)) if i not in self.records]

    def add(self, i: int, record: RunRecord, host: str, env: dict[str, Any]) -> None:
        """Keep the run of point ``i`` and rewrite results.json and results.csv."""
        self.records[i] = record
        self.hosts[host] = env
        self.write(report_too=False)

    def results(self) -> Results:
        meta = dict(self.metadata, **machine_metadata(self.hosts), hosts=self.hosts,
                    incomplete=len(self.records) < len(self.points))
        return Results(meta, [self.records[i] for i in sorted(self.records)])

    def write(self, *, report_too: bool = True) -> list[str]:
        """Write the files (results.json and results.csv only, unless ``report_too``); the paths written."""
        results = self.results()
        json_path, csv_path = (os.path.join(self.out, name) for name in (RESULTS_JSON, RESULTS_CSV))
        replace, self.replace = self.replace, True      # ours from the first write on
        if self.plan.virtual:
            # imported here: it imports this module, and only virtual runs need it
            from pcpd.simulate import output

            if report_too:
                return output.write_all(results, self.out, replace=replace)
            dump(results, json_path, replace=replace)
            write_atomic(csv_path, output.csv_text(results).encode(), replace=replace)
            return [json_path, csv_path]
        dump(results, json_path, replace=replace)
        dump_csv(results, csv_path, replace=replace)
        if report_too:
            return [json_path, csv_path, *report.write_report(results, self.out, replace=replace)]
        return [json_path, csv_path]


def previous_results(out: str, metadata: dict[str, Any]) -> Results:
    """The interrupted experiment in ``out``, checked to be this plan's.  Raises UsageError."""
    path = os.path.join(out, RESULTS_JSON)
    if not os.path.exists(path):
        raise UsageError(f"--resume {out}: no {RESULTS_JSON} there: no experiment to resume")
    previous = load(path)
    for key in PLAN_METADATA:
        was, now = previous.metadata.get(key), json.loads(json.dumps(metadata.get(key)))
        if was != now:
            raise UsageError(f"--resume {out}: that experiment ran with another {key} ({json.dumps(was)}, "
                             f"now {json.dumps(now)}): resume it with its own config and options")
    if not previous.metadata.get("incomplete"):
        raise UsageError(f"--resume {out}: that experiment finished all its {len(previous.runs)} runs")
    return previous

