#!/usr/bin/env bash
# Installs the Debian packages qcs-agent needs to build, test and run locally. Idempotent: only
# missing packages are installed. Needs root (apt-get).
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git clang-format
  libcurl4-openssl-dev libssl-dev libboost-dev libspdlog-dev libfmt-dev libyaml-cpp-dev
  nlohmann-json3-dev libcli11-dev libsystemd-dev prometheus-cpp-dev
  # containerd's gRPC API: C++ generated at build time from the .proto files Debian ships
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc golang-github-containerd-containerd-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # the real things the tests run against
  docker.io containerd runc busybox-static docker-registry apache2-utils curl iproute2 procps prometheus
  wrk jq linux-perf  # bench/run.sh: the /metrics load generator, its JSON reading, the scrape profile
  openssl  # the check command's tests: a loopback HTTPS server with a self-signed certificate
  clang libclang-rt-14-dev  # scripts/fuzz.sh: libFuzzer with ASan+UBSan
  rpm debootstrap dpkg-dev file binutils  # packaging tests: .rpm, the boot test's clean Debian, inspection
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# node and npm (the SigV4 cross-check against AWS's own signer, the manifest validator) are taken
# as they come when present, whichever package brought them; Debian's otherwise.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
  packages+=(nodejs npm)
fi

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: run as root (sudo $0) to install them" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
