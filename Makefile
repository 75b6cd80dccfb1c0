# banger: build, test, install. `make help` lists the targets.
PREFIX ?= /usr/local
CARGO ?= cargo
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Host packages the daemon and the whole test suite use (Debian/Ubuntu
# names): `make deps` is all a fresh machine needs before `make test`
# (openssh-server: the SSH client tests run a real sshd on loopback;
# docker-registry, skopeo and apache2-utils: the OCI tests push their own
# images to a registry they start on loopback).
DEB_PACKAGES := e2fsprogs iproute2 nftables openssh-client openssh-server sudo ca-certificates \
	qemu-system-x86 debootstrap busybox-static cpio lz4 zstd kmod binutils curl tmux systemd \
	docker-registry skopeo apache2-utils

.PHONY: help deps build agent test test-agent-boot test-firecracker nested-debs lint bench install uninstall clean runtime-debian runtime-bundle verify

help:
	@echo "make deps      install the host packages banger uses (apt-get)"
	@echo "make build     build ./banger and ./bangerd (release)"
	@echo "make test      run the whole test suite"
	@echo "make test-firecracker  the Firecracker tier on real guests (nested under QEMU here; minutes)"
	@echo "make test-agent-boot   the agent crate's own QEMU boot tests (minutes under TCG)"
	@echo "make lint      cargo fmt --check and clippy -D warnings"
	@echo "make bench     print the control-plane figures"
	@echo "make install   install banger, bangerd and the root-owned banger-helper under PREFIX=$(PREFIX)"
	@echo "make agent     build the static guest agent the initrd carries"
	@echo "make runtime-debian  build ./runtime (kernel, initrd with the agent, rootfs) from Debian's packages"
	@echo "make runtime-bundle  fetch ./runtime from the archive RUNTIME_MANIFEST names"
	@echo "make verify    boot a real VM and run the smoke test (verify.sh)"

# docker-registry's package starts a registry on every interface; the tests
# start their own on loopback, so the service is stopped and disabled.
deps:
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEB_PACKAGES)
	-@command -v systemctl >/dev/null && $(SUDO) systemctl disable --now docker-registry >/dev/null 2>&1 || true

build:
	$(CARGO) build --release --bins
	cp target/release/banger target/release/bangerd target/release/banger-helper .

# Tests whose pieces are missing (root, a runtime bundle, a firecracker
# binary) pass without running; they write why to this file, and the list is
# printed after the run so a skipped tier never reads as a passing one.
SKIP_LOG := $(CURDIR)/target/test-skips.txt
test:
	@mkdir -p target && rm -f $(SKIP_LOG)
	@BANGER_SKIP_LOG=$(SKIP_LOG) $(CARGO) test --workspace; status=$$?; \
	if [ -s $(SKIP_LOG) ]; then \
		echo; echo "Tests that did not run here, and why:"; sort $(SKIP_LOG) | sed 's/^/  /'; \
	else echo; echo "Every test tier ran."; fi; \
	echo "Ignored in make test: the agent crate's QEMU boot tests (make test-agent-boot runs them)."; \
	exit $$status

# The Firecracker tier: every Firecracker code path on a real guest. Where
# this host's KVM cannot boot a Firecracker guest (kvm_pvm), it runs one level
# down, in a QEMU VM made by banger itself. It needs a firecracker binary
# (BANGER_TEST_FIRECRACKER, the bundle's, or on PATH; see README) and the .deb
# files its outer VM lacks, downloaded here beforehand so the tests themselves
# reach nothing off the machine.
NESTED_DEBS := runtime/nested-debs
nested-debs:
	@if [ -f $(NESTED_DEBS)/requested ]; then echo "$(NESTED_DEBS) present"; \
	else $(SUDO) scripts/fetch-debs.sh $(NESTED_DEBS) runtime/rootfs.ext4 nftables; fi

# The agent crate's own boot tests: ./runtime under QEMU with the agent's
# channel and a user-mode NIC, driven by the protocol directly (clock,
# entropy, freeze/thaw, identity and its rollback, poweroff, agent as init).
# `make test` leaves them out (ignored: minutes under TCG) and says so.
test-agent-boot:
	$(CARGO) test -p banger-agent --test qemu_boot -- --ignored --nocapture

test-firecracker: nested-debs
	@mkdir -p target && rm -f $(SKIP_LOG)
	@BANGER_SKIP_LOG=$(SKIP_LOG) BANGER_FIRECRACKER_TIER=1 $(CARGO) test --test firecracker_nested; \
	status=$$?; if [ -s $(SKIP_LOG) ]; then echo; echo "The Firecracker tier did not run:"; \
	sed 's/^/  /' $(SKIP_LOG); fi; exit $$status

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) bench --bench control_plane

# The helper must be root's, like every directory above it: whoever can
# change it is root (see SECURITY.md). Run as root: `sudo make install`.
install:
	@test -f banger -a -f bangerd -a -f banger-helper || { echo "run make build first"; exit 1; }
	install -D -m 0755 banger $(DESTDIR)$(PREFIX)/bin/banger
	install -D -m 0755 bangerd $(DESTDIR)$(PREFIX)/bin/bangerd
	install -D -o root -g root -m 0755 banger-helper $(DESTDIR)$(PREFIX)/libexec/banger/banger-helper
	install -D -m 0644 contrib/bangerd.service $(DESTDIR)$(PREFIX)/lib/systemd/user/bangerd.service

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/banger $(DESTDIR)$(PREFIX)/bin/bangerd \
	      $(DESTDIR)$(PREFIX)/libexec/banger/banger-helper \
	      $(DESTDIR)$(PREFIX)/lib/systemd/user/bangerd.service

clean:
	$(CARGO) clean
	rm -f banger bangerd banger-helper

# The guest agent: static and size-optimised (the `agent` profile), for the
# initramfs. Against musl where rustup has that target (about 600 KB),
# else glibc with crt-static (about 1.3 MB). Its own target triple keeps
# its flags away from the host build's artifacts.
MUSL_TARGET := x86_64-unknown-linux-musl
AGENT_TARGET ?= $(if $(filter $(MUSL_TARGET),$(shell rustup target list --installed 2>/dev/null)),$(MUSL_TARGET),x86_64-unknown-linux-gnu)
AGENT_BIN := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/$(AGENT_TARGET)/agent/banger-agent
agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build -p banger-agent --profile agent --target $(AGENT_TARGET)
	@ls -l $(AGENT_BIN)

runtime-debian: agent
	$(SUDO) env AGENT_BIN=$(AGENT_BIN) scripts/make-bundle.sh runtime

RUNTIME_MANIFEST ?= runtime-bundle.toml
runtime-bundle:
	RUNTIME_MANIFEST=$(RUNTIME_MANIFEST) scripts/fetch-bundle.sh runtime

verify: build
	./verify.sh $(if $(VMM),--vmm $(VMM)) $(if $(NAT),--nat)
