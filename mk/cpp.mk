# C++ engine, kernels and backend: configure, build, ctest.
CMAKE_FLAGS ?=

.PHONY: deps-cpp build-cpp test-cpp
DEPS_TARGETS += deps-cpp
TEST_TARGETS += test-cpp

deps-cpp:
	scripts/deps-apt.sh

build-cpp:
	cmake -S . -B $(BUILD_DIR) -G Ninja $(CMAKE_FLAGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

test-cpp: build-cpp
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)
