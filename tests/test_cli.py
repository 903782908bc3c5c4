"""pcpd.cli: dispatch to the subcommand's module and pcpd's errors turned into exit codes.

2 for a user's mistake (one line on stderr, no traceback), 1 for a failed
run, 130 for ^C, 0 when the reader of stdout went away; ``pcpd --help``
lists every command, and only the selected subcommand's module is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from pcpd import cli
from pcpd.errors import ArenaError, ConfigError, UsageError

REPO = Path(__file__).parents[1]


class FakeCommand:
    """A subcommand module: ``add_arguments`` and ``command``, recording its calls."""

    def __init__(self, outcome: object = 0) -> None:
        self.outcome = outcome
        self.calls: list[object] = []
        self.module = types.ModuleType("pcpd_test_fake")
        self.module.add_arguments = self.add_arguments
        self.module.command = self.command

    def add_arguments(self, parser) -> None:
        parser.add_argument("path")
        parser.add_argument("--count", type=int, default=1)

    def command(self, args) -> int:
        self.calls.append(args)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


@pytest.fixture
def fake(monkeypatch):
    """Install a ``fake`` subcommand; set ``fake.outcome`` to what its command does."""
    command = FakeCommand()
    monkeypatch.setitem(sys.modules, "pcpd_test_fake", command.module)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("pcpd_test_fake", "a command for the tests"))
    return command


def one_error_line(err: str, prefix: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


# -- dispatch ---------------------------------------------------------------------------

def test_dispatch_passes_parsed_arguments_and_returns_the_commands_code(fake, capsys):
    fake.outcome = 7
    assert cli.main(["fake", "x.toml", "--count", "3"]) == 7
    [args] = fake.calls
    assert (args.command, args.path, args.count) == ("fake", "x.toml", 3)
    assert capsys.readouterr().err == ""


def test_the_selected_commands_arguments_are_added(fake, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fake", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pcpd fake") and "--count" in out and "path" in out
    assert fake.calls == []


# -- exit codes ---------------------------------------------------------------------------

@pytest.mark.parametrize("error", [UsageError("no such file: x.toml"),
                                   ConfigError("x.toml", "arena.memory", "expected a size")])
def test_a_usage_error_exits_2_with_one_line(fake, capsys, error):
    fake.outcome = error
    assert cli.main(["fake", "x.toml"]) == 2
    line = one_error_line(capsys.readouterr().err, "pcpd fake: error: ")
    assert line == f"pcpd fake: error: {error}"


def test_a_failed_run_exits_1_with_one_line(fake, capsys):
    fake.outcome = ArenaError("cannot create shared memory segment")
    assert cli.main(["fake", "x.toml"]) == 1
    line = one_error_line(capsys.readouterr().err, "pcpd fake: failed: ")
    assert line == "pcpd fake: failed: cannot create shared memory segment"


def test_keyboard_interrupt_exits_130_quietly(fake, capsys):
    fake.outcome = KeyboardInterrupt()
    assert cli.main(["fake", "x.toml"]) == 130
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_exits_0_quietly(fake, capsys):
    fake.outcome = BrokenPipeError()
    assert cli.main(["fake", "x.toml"]) == 0
    assert capsys.readouterr().err == ""


def test_other_exceptions_are_not_swallowed(fake):
    fake.outcome = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["fake", "x.toml"])


@pytest.mark.parametrize("argv, prefix", [
    (["fake"], "pcpd fake: error: "),                            # missing positional
    (["fake", "x.toml", "--count", "many"], "pcpd fake: error: "),
    (["fake", "x.toml", "--no-such-option"], "pcpd: error: "),   # unknown options: the top parser
    (["no-such-command"], "pcpd: error: "),
])
def test_argument_errors_exit_2_with_one_line(fake, capsys, argv, prefix):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    one_error_line(capsys.readouterr().err, prefix)
    assert fake.calls == []


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: pcpd")


# -- help ---------------------------------------------------------------------------------

def test_help_lists_every_command_with_its_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())     # argparse wraps long lines
    assert len(cli.COMMANDS) >= 8
    for name, (_, help_text) in cli.COMMANDS.items():
        assert f"{name} {help_text}" in out, name


# -- what is imported ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_only_the_selected_commands_module_is_imported(monkeypatch, capsys, name):
    imported = []
    real = cli.importlib.import_module

    def recording(module: str):
        imported.append(module)
        return real(module)

    monkeypatch.setattr(cli.importlib, "import_module", recording)
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    assert imported == [cli.COMMANDS[name][0]]
    assert capsys.readouterr().out.startswith(f"usage: pcpd {name}")


def test_help_alone_imports_no_command_module():
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        from pcpd import cli
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.main(["--help"])
            except SystemExit:
                pass
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pcpd", "workers"))))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["pcpd", "pcpd.cli", "pcpd.core", "pcpd.errors"]


# -- as a process ---------------------------------------------------------------------------

def test_a_closed_stdout_ends_the_process_quietly(tmp_path):
    """``pcpd ... | head``: exit 0 and nothing on stderr once the reader is gone."""
    (tmp_path / "pcpd_test_spew.py").write_text(textwrap.dedent("""
        import sys

        def add_arguments(parser):
            pass

        def command(args):
            for i in range(1_000_000):
                print(f"line {i:07d} " + "x" * 60)
            return 3                                  # never reached: the pipe breaks first
    """))
    code = ("import sys; from pcpd import cli; "
            "cli.COMMANDS['spew'] = ('pcpd_test_spew', 'spew'); sys.exit(cli.main(['spew']))")
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"line 0000000")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
