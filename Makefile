# Top-level entry points. Each area keeps its targets in mk/<area>.mk and adds
# itself to TEST_TARGETS / DEPS_TARGETS there.
SHELL := /bin/bash
.DEFAULT_GOAL := help
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

TEST_TARGETS :=
DEPS_TARGETS :=

-include mk/*.mk

.PHONY: help deps test
help:
	@echo "make deps   install what the project needs (apt, pip, go modules)"
	@echo "make run    tritonserver + gateway on the tiny model (prints a curl)"
	@echo "make test   everything CI runs"

deps: $(DEPS_TARGETS)

test: $(TEST_TARGETS)
	@echo "all test suites passed: $(TEST_TARGETS)"
