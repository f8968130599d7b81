"""What `systemctl status` says about the gateway, and systemd's watchdog restarting it.

The arbiter sends the /healthz summary as STATUS= and feeds WatchdogSec= (20 s, the role's
default) only while a worker answers; with every worker stopped (SIGSTOP) systemd restarts
the service.
"""

from __future__ import annotations

import time

UNIT = "telegram-gateway.service"
HEALTHY = "1/1 bots polled, NATS connected, 0 failing"
WATCHDOG_SEC = 20


def test_systemctl_status_shows_the_health_summary(host):
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = host.check_output(f"systemctl show -p StatusText --value {UNIT}")
        if text == HEALTHY:
            break
        time.sleep(1)
    assert text == HEALTHY
    status = host.run(f"systemctl status --no-pager {UNIT}").stdout
    line = next(line.strip() for line in status.splitlines() if "Status:" in line)
    print(f"\nsystemctl status {UNIT}: {line}")
    assert line == f'Status: "{HEALTHY}"'
    assert host.check_output(f"systemctl show -p WatchdogUSec --value {UNIT}") == "20s"


def test_the_watchdog_restarts_a_gateway_whose_workers_stop_answering(probe):
    res = probe("watchdog", timeout=150)
    print(
        f"\nWATCHDOG all {len(res['workers'])} workers stopped: restarted after "
        f"{res['restarted_after']} s, /healthz 200 after {res['seconds']} s; "
        f"journal: {res['watchdog_lines']}"
    )
    assert res["restarts_after"] == res["restarts_before"] + 1, res
    assert res["healthz_status"] == 200, res
    assert any("Watchdog timeout" in line for line in res["watchdog_lines"]), res
    # the last ping came up to a quarter of WatchdogSec before the workers stopped
    assert WATCHDOG_SEC * 3 / 4 - 1 <= res["restarted_after"] <= WATCHDOG_SEC + 40, res
