.PHONY: setup test record packages deb rpm package-deps clean-packages

# Extra arguments: make test ARGS="tests/unit -k sse", make record ARGS="--help"
ARGS ?=

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh $(ARGS)

record:
	bash scripts/record.sh $(ARGS)

# --- packages: make packages -> build/packages/oisp-sensor_VERSION_all.deb and .../noarch/*.rpm
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
OUT := build/packages
SRC := oisp-sensor-$(VERSION)
# The distribution's tools and interpreter, not a pyenv or virtualenv that comes first on PATH.
SYSTEM_PATH := env PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The tree a package is built from: the files git tracks (as they are in the work tree), so a
# build, a venv or a stray file in the checkout never ends up in a package.
define lay_out_tree
	rm -rf $(1) && mkdir -p $(1)
	git ls-files -z | tar --null -T - -cf - | tar -xf - -C $(1)
endef

packages: deb rpm

# Build tools (Debian 12): debhelper, dh-python and pybuild for the .deb, rpm for the .rpm.
package-deps:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools rpm lintian >/dev/null

deb:
	$(call lay_out_tree,$(OUT)/deb/$(SRC))
	cp -r packaging/deb/debian $(OUT)/deb/$(SRC)/debian
	cd $(OUT)/deb/$(SRC) && $(SYSTEM_PATH) dpkg-buildpackage -b -us -uc
	cp $(OUT)/deb/oisp-sensor_$(VERSION)_all.deb $(OUT)/

# Debian's rpm has an empty package database, so BuildRequires cannot be checked there.
RPMBUILD_FLAGS ?= $(if $(wildcard /etc/debian_version),--nodeps)
rpm:
	rm -rf $(OUT)/rpm && mkdir -p $(OUT)/rpm/SOURCES
	$(call lay_out_tree,$(OUT)/rpm/tree/$(SRC))
	tar -C $(OUT)/rpm/tree -czf $(OUT)/rpm/SOURCES/$(SRC).tar.gz $(SRC)
	$(SYSTEM_PATH) rpmbuild -bb $(RPMBUILD_FLAGS) --define "_topdir $(abspath $(OUT)/rpm)" --define "pkg_version $(VERSION)" packaging/rpm/oisp-sensor.spec
	cp $(OUT)/rpm/RPMS/noarch/oisp-sensor-$(VERSION)-*.noarch.rpm $(OUT)/

clean-packages:
	rm -rf $(OUT)
