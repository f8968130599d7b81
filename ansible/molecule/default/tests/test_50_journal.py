"""Last, after converges, traffic, restarts and a kill -9 have all been logged: no secret in
the journal (every field of every entry, not only the message text)."""

from __future__ import annotations


def test_no_secret_in_the_journal(host, secrets):
    entries = int(host.check_output("journalctl --no-pager -o export | grep -ac '^__CURSOR='"))
    assert entries > 200, "suspiciously little in the journal"
    leaked = [
        name
        for name, value in secrets.items()
        if host.run(f"journalctl --no-pager -o export | grep -aqF -e {value!r}").rc == 0
    ]
    assert leaked == [], f"in the journal: {leaked}"
