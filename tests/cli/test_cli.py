"""The ``synthaug`` command line: help, version, exit codes, every subcommand's --help,
and a light ``import synthaug``."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib import import_module
from pathlib import Path

import pytest

import synthaug
from synthaug import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


# --- help and version ---------------------------------------------------------------------


def test_help_and_version_in_a_subprocess():
    res = run_python("-m", "synthaug.cli", "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: synthaug")
    for name, _ in cli.COMMANDS:
        assert name in res.stdout
    res = run_python("-m", "synthaug.cli", "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"synthaug {synthaug.__version__}"
    res = run_python("-m", "synthaug.cli", "--no-such-option")
    assert res.returncode == 2 and "synthaug: error:" in res.stderr


def test_help_and_version_via_main(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    assert "usage: synthaug" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"synthaug {synthaug.__version__}"


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "usage: synthaug" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["no-such-command"])
    assert info.value.code == 2
    assert "synthaug: error:" in capsys.readouterr().err


def test_version_matches_the_package_metadata():
    from importlib.metadata import PackageNotFoundError, version

    try:
        assert version("synthaug") == synthaug.__version__
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        pytest.skip("synthaug is not installed")


# --- registered subcommands ------------------------------------------------------------------


@pytest.fixture
def fake_command(monkeypatch):
    """Register a throw-away subcommand whose behaviour each test sets."""
    module = types.ModuleType("synthaug.cli._fake_for_tests")
    module.HELP = "a fake command for the tests"
    module.behaviour = lambda: 0

    def configure(parser):
        parser.add_argument("--n", type=int, default=1)

    def run(args):
        return module.behaviour()

    module.configure, module.run = configure, run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, ("fake", "_fake_for_tests")])
    return module


def test_registered_commands_are_well_formed():
    names = [name for name, _ in cli.COMMANDS]
    assert len(names) == len(set(names)), f"duplicate subcommands: {names}"
    for name, module_name in cli.COMMANDS:
        module = import_module(f"synthaug.cli.{module_name}")
        assert isinstance(module.HELP, str) and module.HELP.strip(), name
        assert "\n" not in module.HELP.strip(), f"{name}: HELP must be one line"
        assert callable(module.configure) and callable(module.run), name


def test_every_subcommand_help(fake_command, capsys):
    """Each registered subcommand (plus the fake one, so the loop always runs) answers --help."""
    assert cli.COMMANDS[-1] == ("fake", "_fake_for_tests")
    for name, module_name in cli.COMMANDS:
        with pytest.raises(SystemExit) as info:
            cli.main([name, "--help"])
        assert info.value.code == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"usage: synthaug {name}"), name
        help_line = import_module(f"synthaug.cli.{module_name}").HELP.strip()
        assert " ".join(help_line.split()) in " ".join(out.split()), name


def test_exit_codes(fake_command, capsys):
    assert cli.main(["fake"]) == 0
    fake_command.behaviour = lambda: 3
    assert cli.main(["fake"]) == 3

    def bad_input():
        raise ValueError("age=-3 is outside the allowed range [0, 120]")

    fake_command.behaviour = bad_input
    capsys.readouterr()
    assert cli.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "synthaug: error: age=-3 is outside the allowed range [0, 120]"

    def missing():
        raise FileNotFoundError("cohort folder not found: /nowhere")

    fake_command.behaviour = missing
    assert cli.main(["fake"]) == 2
    assert "/nowhere" in capsys.readouterr().err

    def interrupted():
        raise KeyboardInterrupt

    fake_command.behaviour = interrupted
    assert cli.main(["fake"]) == 130
    assert "interrupted" in capsys.readouterr().err

    with pytest.raises(SystemExit) as info:
        cli.main(["fake", "--n", "many"])
    assert info.value.code == 2


# --- light imports ----------------------------------------------------------------------------


def test_public_import_in_a_subprocess():
    res = run_python("-c", "from synthaug import Demographics; print(Demographics(50, 'F', 165, 60).bmi)")
    assert res.returncode == 0, res.stderr
    assert float(res.stdout) == pytest.approx(60 / 1.65**2)


def test_import_synthaug_does_not_import_torch():
    code = (
        "import sys, synthaug, synthaug.core.io; "
        "from synthaug import Demographics, Case, get_preset; "
        "print(sorted(m for m in ('torch', 'monai', 'nnunetv2', 'matplotlib') if m in sys.modules))"
    )
    res = run_python("-c", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_cli_parser_does_not_import_torch():
    """Subcommands keep heavy imports inside ``run``: ``synthaug --help`` must stay fast."""
    code = (
        "import sys; from synthaug import cli; cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'monai', 'nnunetv2') if m in sys.modules))"
    )
    res = run_python("-c", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_library_parameter_names_become_the_flags_that_set_them():
    from synthaug.cli import cli_message

    text = "`ratio` needs `real`; `out_root`: not a folder; plain words stay"
    assert cli_message(text, {"out_root": "--out"}) == "--ratio needs --real; --out: not a folder; plain words stay"


def test_a_library_error_reaches_the_command_line_with_its_flag(tmp_path, capsys):
    from synthaug.cli import main

    assert main(["export-nnunet", "--out", str(tmp_path), "--dataset-id", "1000", "--name", "X", "--phantom",
                 "--n-synthetic", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synthaug: error: --dataset-id: expected an integer in 1-999") and "`" not in err
