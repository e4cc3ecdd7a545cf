# Two entry points; both set up a fresh machine first (scripts/setup is idempotent).
.PHONY: demo test setup
setup:
	bash scripts/setup
demo:
	bash scripts/demo
test:
	bash scripts/test
