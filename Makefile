# Two entry points (demo, test); both set up a fresh machine first from the locks (scripts/setup is idempotent).
.PHONY: demo test setup lock check-latest
setup:
	bash scripts/setup
demo:
	bash scripts/demo
test:
	bash scripts/test
# Re-resolve every lock in scripts/locks/ and print what moved (on purpose; review and commit).
lock:
	bash scripts/lock
# Install the newest versions the ranges allow into scratch environments; print what moved and what broke.
check-latest:
	bash scripts/check-latest
