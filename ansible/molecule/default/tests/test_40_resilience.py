"""Resilience under systemd: restarts while updates flow lose nothing; kill -9 heals itself."""

from __future__ import annotations

from collections import Counter

KILL9_DEADLINE = 30.0


def test_scheduled_restart_restarts_the_bot_api_server_under_its_sandbox(host):
    """telegram-bot-api-restart.service (hardened: no capabilities, no network) does its job
    when its timer fires: here started by hand, as the timer would."""
    assert host.service("telegram-bot-api-restart.timer").is_running
    before = host.check_output("systemctl show -p MainPID --value telegram-bot-api.service")
    result = host.run("systemctl start telegram-bot-api-restart.service")
    assert result.rc == 0, host.run(
        "journalctl --no-pager -n 20 -u telegram-bot-api-restart.service"
    ).stdout
    after = host.check_output("systemctl show -p MainPID --value telegram-bot-api.service")
    assert after not in ("0", before)
    assert host.service("telegram-bot-api.service").is_running


def test_no_update_lost_across_nats_and_botapi_restarts(probe, agents):
    res = probe(
        "restarts",
        units=["nats-server.service", "telegram-bot-api.service"],
        interval=0.1,
        pause=3.0,
        timeout=90.0,
        **agents,
    )
    injected, received = res["injected"], res["received"]
    print(
        f"\nRESTARTS {res['timeline']}: {len(injected)} updates injected "
        f"({res['inject_errors']} inject retries), stream drained {res['drain_seconds']} s later"
    )
    assert len(injected) > 50, res
    lost = sorted(set(injected) - set(received))
    assert lost == [], f"{len(lost)} of {len(injected)} updates never reached the stream: {lost}"
    doubled = {uid: n for uid, n in Counter(received).items() if n > 1}
    assert doubled == {}, f"updates stored more than once: {doubled}"


def test_gateway_restarted_by_systemd_after_kill_9(probe, agents, host):
    res = probe("kill9", timeout=KILL9_DEADLINE)
    print(f"\nKILL -9 gateway pid {res['old_pid']}: /healthz 200 again after {res['seconds']} s")
    assert res["new_pid"] not in (0, res["old_pid"]), res
    assert res["restarts_after"] == res["restarts_before"] + 1, res
    assert res["healthz_status"] == 200, res
    assert res["seconds"] <= KILL9_DEADLINE
    # no orphaned worker of the killed arbiter is left behind
    pids = host.check_output("systemctl show -p MainPID --value telegram-gateway.service")
    procs = host.check_output("ps -o pid=,ppid=,args= -u telegram-gateway").splitlines()
    strays = [p for p in procs if p.split()[0] != pids and p.split()[1] != pids]
    assert strays == [], strays
    # and it still delivers
    after = probe("inbound", count=1, timeout=10.0, **agents)
    assert {m["update"]["update_id"] for m in after["messages"]} >= set(after["injected"])
