# The two commands of the README:
#   make demo   set everything up (idempotent) and run the node demo
#   make test   set everything up (idempotent) and run all tests
.PHONY: setup demo test test-fast bench clean
setup:
	bash scripts/setup.sh
demo: setup
	bash scripts/run_demo.sh
test: setup
	bash scripts/run_tests.sh
test-fast: setup
	bash scripts/run_tests.sh -m "not slow"
clean:
	rm -rf build install log log_build.txt
