"""The imapidled integration-test harness: real Dovecot, D-Bus and HTTP parts on loopback.
Used by tests/integration/conftest.py and by scripts/demo.py."""
