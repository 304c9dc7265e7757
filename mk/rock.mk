# mk/rock.mk: the release's source rock.
#   make rock   $(BUILD)/rock/lua-resty-passport-<version>-1.src.rock, for
#               `luarocks install ./lua-resty-passport-<version>-1.src.rock`
# The rock holds rockspec/lua-resty-passport-<version>-1.rockspec as it is
# published (its source.url: GitHub's archive of the tag v<version>) and
# that archive, made here from the tracked files of the working tree (plus
# new files not yet ignored), so no network is needed: luarocks pack runs on
# a copy of the rockspec whose url points at the local tarball, then the
# published rockspec replaces the copy inside the rock.
ROCK_NAME = lua-resty-passport-$(VERSION)
ROCK_SPEC = rockspec/$(ROCK_NAME)-1.rockspec
ROCK_DIR = $(BUILD)/rock
ROCK = $(ROCK_DIR)/$(ROCK_NAME)-1.src.rock
ROCK_TARBALL = v$(VERSION).tar.gz

.PHONY: rock

rock: $(ROCK_SPEC)
	@git rev-parse --is-inside-work-tree >/dev/null 2>&1 || \
	  { echo "make rock: needs a git checkout (it packs the tracked files)"; exit 1; }
	rm -rf $(ROCK_DIR) && mkdir -p $(ROCK_DIR)/pack
	git ls-files -co --exclude-standard | \
	  while IFS= read -r f; do [ ! -f "$$f" ] || echo "$$f"; done > $(ROCK_DIR)/files
	tar -czf $(ROCK_DIR)/$(ROCK_TARBALL) --transform 's,^,$(ROCK_NAME)/,' \
	  -T $(ROCK_DIR)/files
	sed 's|^\( *url *= *\).*|\1"file://$(abspath $(ROCK_DIR))/$(ROCK_TARBALL)",|' \
	  $(ROCK_SPEC) > $(ROCK_DIR)/pack/$(notdir $(ROCK_SPEC))
	cd $(ROCK_DIR) && luarocks --lua-version=$(LUA_VERSION) pack \
	  pack/$(notdir $(ROCK_SPEC))
	cd rockspec && zip -q $(abspath $(ROCK)) $(notdir $(ROCK_SPEC))
	@echo "make rock: $(ROCK)"
