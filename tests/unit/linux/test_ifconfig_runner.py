"""ScriptIpConfigurator's program half, with real tiny scripts in tmp_path."""

from __future__ import annotations

import contextlib

# The banned-api rule guards the sans-IO core; these tests watch real processes.
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvguest.abi.constants import HvStatus
from hvguest.errors import OperationFailed
from hvguest.linux.ifconfig import ScriptIpConfigurator, run_program
from hvguest.services.ipconfig import parse_ip_settings, render_ifcfg, render_nmconnection
from hvguest.services.ports import IpSettings


def settings() -> IpSettings:
    return parse_ip_settings(
        "eth0",
        "00:15:5D:01:02:03",
        dhcp_enabled=False,
        ip_addr="10.0.0.5;2001:db8::5",
        sub_net="24;64",
        gate_way="10.0.0.1",
        dns_addr="8.8.8.8",
    )


def script(directory: Path, body: str, name: str = "set_ifconfig") -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def is_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def wait_until_gone(pid: int, budget: float = 10.0) -> bool:
    deadline = time.monotonic() + budget
    while not is_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@contextlib.contextmanager
def reaping(pid_file: Path) -> Iterator[None]:
    """Kill the process whose pid a script wrote, if the test left it running."""
    try:
        yield
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_exit_0_succeeds_and_receives_argv_exactly(tmp_path: Path) -> None:
    out = tmp_path / "argv"
    program = script(tmp_path, f"for arg in \"$@\"; do printf '%s\\n' \"$arg\"; done > '{out}'\n")
    state = tmp_path / "state"
    # Arguments a shell would split or expand prove no shell is involved.
    argv = [str(program), "with space", "$(touch pwned);*"]
    ScriptIpConfigurator(state, argv).apply(settings())
    assert out.read_text().splitlines() == [
        "with space",
        "$(touch pwned);*",
        str(state / "ifcfg-eth0"),
        str(state / "eth0.nmconnection"),
    ]
    assert not (tmp_path / "pwned").exists()
    # The output files are unnamed: the state directory holds just the two files.
    assert sorted(p.name for p in state.iterdir()) == ["eth0.nmconnection", "ifcfg-eth0"]


def test_files_are_complete_when_the_program_runs(tmp_path: Path) -> None:
    program = script(
        tmp_path, f"cat \"$1\" > '{tmp_path}/seen1'; cat \"$2\" > '{tmp_path}/seen2'\n"
    )
    ScriptIpConfigurator(tmp_path / "state", [str(program)]).apply(settings())
    assert (tmp_path / "seen1").read_text() == render_ifcfg(settings())
    assert (tmp_path / "seen2").read_text() == render_nmconnection(settings())


def test_stdin_is_dev_null(tmp_path: Path) -> None:
    program = script(tmp_path, f"cat > '{tmp_path}/stdin'; echo $? > '{tmp_path}/rc'\n")
    run_program([str(program)], timeout=20)
    assert (tmp_path / "stdin").read_bytes() == b""
    assert (tmp_path / "rc").read_text() == "0\n"


def test_exit_3_is_e_fail_with_status_and_last_stderr_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program = script(tmp_path, "echo to-stdout\necho first >&2\necho 'ifup failed' >&2\nexit 3\n")
    with (
        caplog.at_level("DEBUG", logger="hvguest.linux.ifconfig"),
        pytest.raises(OperationFailed) as caught,
    ):
        ScriptIpConfigurator(tmp_path / "state", [str(program)]).apply(settings())
    assert caught.value.status is HvStatus.E_FAIL
    assert str(caught.value) == f"{program} exited with status 3: ifup failed"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "first\nifup failed" in warnings[0]


def test_missing_program_is_e_fail_saying_how_to_configure(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "hv_set_ifconfig"
    with pytest.raises(OperationFailed) as caught:
        ScriptIpConfigurator(tmp_path / "state", [str(missing)]).apply(settings())
    assert caught.value.status is HvStatus.E_FAIL
    message = str(caught.value)
    assert str(missing) in message
    assert "no such program" in message
    assert "[kvp] set_ifconfig" in message
    # The files are written first, as the reference does on Debian (no script there).
    assert (tmp_path / "state" / "ifcfg-eth0").is_file()


def test_program_that_cannot_be_executed_is_e_fail(tmp_path: Path) -> None:
    not_executable = tmp_path / "plain"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)
    with pytest.raises(OperationFailed) as caught:
        run_program([str(not_executable)], timeout=20)
    assert caught.value.status is HvStatus.E_FAIL
    assert "cannot run" in str(caught.value)


def test_death_by_signal_is_e_fail_naming_the_signal(tmp_path: Path) -> None:
    program = script(tmp_path, "kill -TERM $$\nsleep 5\n")
    with pytest.raises(OperationFailed) as caught:
        run_program([str(program)], timeout=20)
    assert caught.value.status is HvStatus.E_FAIL
    assert "SIGTERM" in str(caught.value)


def test_timeout_kills_the_program_and_what_it_started(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    script_pid = tmp_path / "script.pid"
    program = script(
        tmp_path,
        f"echo $$ > '{script_pid}'\nsleep 300 &\necho $! > '{child_pid}'\nwait\n",
    )
    configurator = ScriptIpConfigurator(tmp_path / "state", [str(program)], timeout=0.5)
    with reaping(child_pid), reaping(script_pid):
        with pytest.raises(OperationFailed) as caught:
            configurator.apply(settings())
        assert caught.value.status is HvStatus.E_FAIL
        assert "did not finish within 0.5 s" in str(caught.value)
        assert wait_until_gone(int(script_pid.read_text()))
        assert wait_until_gone(int(child_pid.read_text()))


def test_background_process_holding_output_does_not_block(tmp_path: Path) -> None:
    # ifup may leave dhclient running with the script's stdout and stderr;
    # success must not wait for it (a pipe reader would, until the timeout).
    child_pid = tmp_path / "child.pid"
    program = script(tmp_path, f"sleep 300 &\necho $! > '{child_pid}'\necho done\nexit 0\n")
    with reaping(child_pid):
        run_program([str(program)], timeout=20)
        assert not is_gone(int(child_pid.read_text()))


def test_unusable_output_directory_is_e_fail_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    program = script(tmp_path, f"touch '{marker}'\n")
    with pytest.raises(OperationFailed) as caught:
        run_program([str(program)], timeout=20, output_dir=tmp_path / "missing")
    assert caught.value.status is HvStatus.E_FAIL
    assert "output" in str(caught.value)
    assert not marker.exists()
