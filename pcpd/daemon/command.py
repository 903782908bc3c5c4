"""``pcpd run [CONFIG]``: the command line of the daemon.

The daemon's status lines go to stdout as the run goes, its summary when it
has stopped; logs go to stderr.  The exit status is the run's: 0 once every
page is back in the buddy and the final audit passed, 1 otherwise.
"""

from __future__ import annotations

import argparse

from pcpd import argtypes
from pcpd.config.load import load_settings
from pcpd.config.settings import DEFAULT_SETTINGS
from pcpd.daemon.console import summary_text
from pcpd.daemon.supervisor import Daemon, RunOptions
from pcpd.logs import configure_daemon_logging
from pcpd.policies import POLICIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", nargs="?",
                        help="TOML config (default: the built-in soak mix)")
    parser.add_argument("--duration", type=argtypes.seconds, metavar="SECONDS",
                        help="stop after this long (default: the config's; 0 = until signalled)")
    parser.add_argument("--policy", choices=tuple(POLICIES),
                        help="override the config's policy")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help='metrics address (default: the config\'s exporter.address; "" disables)')
    parser.add_argument("--status-interval", type=argtypes.seconds, default=5.0, metavar="SECONDS")
    parser.add_argument("--audit-interval", type=argtypes.seconds, default=10.0, metavar="SECONDS")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin workers to their CPUs")
    parser.add_argument("--kill-interval", type=argtypes.seconds, default=0.0, metavar="SECONDS",
                        help="soak with faults: SIGKILL a worker this often, every other one "
                             "while it holds zone->lock, and report what recovery saved")
    parser.add_argument("--ops", type=argtypes.count, default=0, metavar="N",
                        help="each worker stops after N operations; decay follows the op count, "
                             "so one worker and one seed repeat their counts exactly")


def command(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else DEFAULT_SETTINGS
    options = RunOptions(config_path=args.config, duration=args.duration, policy=args.policy,
                         listen=args.listen, status_interval=args.status_interval,
                         audit_interval=args.audit_interval, pin=args.pin, ops=args.ops,
                         kill_interval=args.kill_interval)
    configure_daemon_logging()
    report = Daemon(settings, options).run()
    print(summary_text(report), flush=True)
    return report.exit_code
