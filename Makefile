.PHONY: setup test record

# Extra arguments: make test ARGS="tests/unit -k sse", make record ARGS="--help"
ARGS ?=

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh $(ARGS)

record:
	bash scripts/record.sh $(ARGS)
