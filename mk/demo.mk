# mk/demo.mk: the newcomer's first hour.
#   make demo   installs what is missing, starts redis-server, the example
#               Express app and the gateways on loopback, runs a real client
#               through them, prints the outcomes, stops everything
#   make run    the same servers, left up for a browser (prints the URLs)
# The browser suite (headless Chromium via playwright-core, test-browser
# below) is one of the Makefile's SUITES: `make test` runs it.
EXAMPLE_APP = examples/app
EXAMPLE_DEPS = $(EXAMPLE_APP)/node_modules/.package-lock.json

.PHONY: demo run demo-setup test-browser

# npm ci only when the lock changed since the last install.
$(EXAMPLE_DEPS): $(EXAMPLE_APP)/package-lock.json
	cd $(EXAMPLE_APP) && npm ci --no-audit --no-fund

# setup first (it installs the compiler, nginx, node...), then the rest.
demo-setup: setup
	@$(MAKE) --no-print-directory all $(EXAMPLE_DEPS)

demo: demo-setup
	tools/demo.sh demo

run: demo-setup
	tools/demo.sh run

# The page logs in, connects through each gateway and gets its greeting;
# screenshots go to $(BUILD)/e2e/.
test-browser: all $(EXAMPLE_DEPS)
	$(RUN) browser $(BUSTED) -o json spec/browser
