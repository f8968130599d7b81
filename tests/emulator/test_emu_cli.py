"""The command line: the real server's option set, its errors, and the emulator extras."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from botapi_emulator.cli import parse_command_line
from harness.emulator import (
    EMULATOR_COMMAND,
    BotHandle,
    EmulatorProcess,
    emulator_env,
    raw_request,
)
from harness.tokens import fake_token

REAL_OPTIONS = (
    "help",
    "version",
    "local",
    "api-id",
    "api-hash",
    "http-port",
    "http-stat-port",
    "dir",
    "temp-dir",
    "filter",
    "max-webhook-connections",
    "http-ip-address",
    "http-stat-ip-address",
    "log",
    "verbosity",
    "memory-verbosity",
    "log-max-file-size",
    "username",
    "groupname",
    "max-connections",
    "cpu-affinity",
    "main-thread-affinity",
    "proxy",
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "EMULATOR_"))}
    clean.update(env or {})
    return subprocess.run(
        [*EMULATOR_COMMAND, *args],
        capture_output=True,
        text=True,
        env=emulator_env(clean),
        timeout=20,
    )


@pytest.mark.integration
class TestProcessCommandLine:
    def test_help_lists_the_real_option_set_and_exits_zero(self) -> None:
        result = run_cli("--help")
        assert result.returncode == 0
        assert "Usage: python -m botapi_emulator --api-id=<arg> --api-hash=<arg>" in result.stderr
        for name in REAL_OPTIONS:
            assert f"--{name}" in result.stderr
        for short in ("-h,", "-p,", "-s,", "-d,", "-t,", "-l,", "-v,", "-u,", "-g,", "-c,"):
            assert short in result.stderr
        assert run_cli("-h").returncode == 0

    def test_version(self) -> None:
        result = run_cli("--version")
        assert result.returncode == 0
        assert result.stderr.strip() == "Bot API 10.0"

    def test_unknown_option_is_an_error(self) -> None:
        result = run_cli("--api-id=1", "--api-hash=x", "--no-such-option")
        assert result.returncode == 1
        assert 'Option "no-such-option" is unrecognized' in result.stderr
        assert "Usage:" in result.stderr
        assert run_cli("--api-id=1", "--api-hash=x", "-Z").returncode == 1

    def test_missing_api_credentials_refuse_to_start(self) -> None:
        result = run_cli("--http-port=0")
        assert result.returncode == 1
        assert (
            "You must provide valid api-id and api-hash obtained at https://my.telegram.org"
            in result.stderr
        )
        assert run_cli("--api-id=5").returncode == 1
        assert run_cli("--api-hash=abc").returncode == 1
        assert run_cli(env={"TELEGRAM_API_ID": "0", "TELEGRAM_API_HASH": "x"}).returncode == 1

    def test_option_errors(self) -> None:
        assert 'Option "http-port" requires an argument' in run_cli("--http-port").stderr
        assert 'Option "local" must not have an argument' in run_cli("--local=1").stderr
        bad_port = run_cli("--api-id=1", "--api-hash=x", "-p", "eighty")
        assert bad_port.returncode == 1
        assert "as number" in bad_port.stderr
        bad_filter = run_cli("--api-id=1", "--api-hash=x", "--filter=3/2")
        assert "remainder < modulo" in bad_filter.stderr
        stray = run_cli("--api-id=1", "--api-hash=x", "stray")
        assert "Unexpected non-option parameters specified" in stray.stderr

    def test_unusable_working_directory(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        result = run_cli("--api-id=1", "--api-hash=x", f"--dir={blocker}/sub", "-p", "0")
        assert result.returncode == 1
        assert "working directory" in result.stderr


@pytest.mark.unit
class TestParsing:
    def parse(self, *argv: str, env: dict[str, str] | None = None):
        return parse_command_line(list(argv), env or {})

    def test_both_value_forms(self) -> None:
        opts, error = self.parse(
            "--api-id",
            "77",
            "--api-hash=hash",
            "-p",
            "9001",
            "--http-stat-port=9002",
            "-d/var/lib/x",
            "--temp-dir",
            "/tmp/y",
            "-v3",
            "--local",
            "--filter",
            "1/3",
            "--control-port=9003",
            "--bot",
            "a",
            "--bot=b",
        )
        assert error is None
        assert (opts.api_id, opts.api_hash, opts.http_port, opts.http_stat_port) == (
            77,
            "hash",
            9001,
            9002,
        )
        assert (opts.dir, opts.temp_dir, opts.verbosity, opts.local) == (
            "/var/lib/x",
            "/tmp/y",
            3,
            True,
        )
        assert (opts.filter_rem, opts.filter_mod, opts.control_port) == (1, 3, 9003)
        assert opts.bots == ["a", "b"]

    def test_defaults_match_the_real_server(self) -> None:
        opts, error = self.parse("--api-id=1", "--api-hash=h")
        assert error is None
        assert opts.http_port == 8081 and opts.http_stat_port == 0
        assert opts.http_ip_address == "0.0.0.0" and opts.dir == "."
        assert opts.memory_verbosity == 3 and opts.log_max_file_size == 2000000000
        assert opts.local is False

    def test_environment_fallback(self) -> None:
        env = {"TELEGRAM_API_ID": "4242", "TELEGRAM_API_HASH": "from-env"}
        opts, error = self.parse(env=env)
        assert error is None and (opts.api_id, opts.api_hash) == (4242, "from-env")
        opts, error = self.parse("--api-id=1", env=env)
        assert error is None and opts.api_id == 1

    def test_ignored_options_are_accepted(self) -> None:
        opts, error = self.parse(
            "--api-id=1",
            "--api-hash=h",
            "--cpu-affinity=3",
            "--main-thread-affinity=1",
            "--proxy=http://127.0.0.1:3128",
            "--memory-verbosity=5",
            "--log-max-file-size=100",
            "--max-webhook-connections=7",
            "--http-ip-address=::1",
            "--http-stat-ip-address=127.0.0.1",
            "-u",
            "nobody",
            "-g",
            "nogroup",
            "-c",
            "4096",
        )
        assert error is None
        assert opts.max_connections == 4096 and opts.username == "nobody"

    def test_invalid_ip_address(self) -> None:
        _, error = self.parse("--api-id=1", "--api-hash=h", "--http-ip-address=x")
        assert error is not None and "IP address" in error


@pytest.mark.integration
class TestStartUp:
    def test_env_credentials_ignored_options_and_log_file(self, tmp_path: Path) -> None:
        token = fake_token(5551234)
        extra = [
            "--cpu-affinity=3",
            "--main-thread-affinity=1",
            "--proxy=http://127.0.0.1:3128",
            "--memory-verbosity=3",
            "--log-max-file-size=100000000",
            "--max-webhook-connections=10",
            "-l",
            "server.log",
            "--bot",
            token,
        ]
        with EmulatorProcess(tmp_path, extra_args=extra, verbosity=4) as emu:
            status, body, _ = emu.call(token, "getMe")
            assert status == 200 and body["result"]["id"] == 5551234
            emu.call(token, "getUpdates")
        log = (tmp_path / "server.log").read_text()
        assert "Bot API 10.0 server started" in log
        assert "bot5551234:<redacted>" in log
        assert token.split(":")[1] not in log

    def test_bots_from_the_environment(self, tmp_path: Path) -> None:
        first, second = fake_token(6660001), fake_token(6660002)
        env = {"EMULATOR_BOT_TOKENS": f"{first}, {second}"}
        with EmulatorProcess(tmp_path, env=env) as emu:
            assert {b["id"] for b in emu.bots()} == {6660001, 6660002}
            assert emu.call(second, "getMe")[0] == 200
            assert all("token" not in b for b in emu.bots())

    def test_invalid_start_up_token_fails_without_printing_it(self, tmp_path: Path) -> None:
        secret = "short-secret"
        env = {"TELEGRAM_API_ID": "1", "TELEGRAM_API_HASH": "x"}
        result = run_cli(f"--dir={tmp_path}", "-p", "0", "--bot", f"123:{secret}", env=env)
        assert result.returncode == 1
        assert secret not in result.stderr

    def test_filter_refuses_other_bots(self, tmp_path: Path) -> None:
        with EmulatorProcess(tmp_path, extra_args=["--filter=1/2"]) as emu:
            odd = BotHandle.register(emu, 7000001)
            assert odd.ok("getMe")["id"] == 7000001
            even = fake_token(7000002)
            status, body, _ = emu.call(even, "getMe")
            assert status == 421
            assert body["description"] == "Misdirected Request: unallowed token specified"

    def test_stats_port_serves_plain_text_without_tokens(self, tmp_path: Path) -> None:
        with EmulatorProcess(tmp_path, stat_port=True) as emu:
            handle = BotHandle.register(emu, 8080808)
            status, headers, body = raw_request(emu.stat_port, "GET", "/")
            assert status == 200 and headers["Content-Type"].startswith("text/plain")
            text = body.decode()
            assert "uptime\t" in text and "bot_count\t1" in text and "id\t8080808" in text
            assert handle.token.split(":")[1] not in text

    def test_sigint_stops_cleanly(self, tmp_path: Path) -> None:
        emu = EmulatorProcess(tmp_path).start()
        assert emu.proc is not None
        emu.proc.send_signal(2)
        assert emu.proc.wait(10) == 0
