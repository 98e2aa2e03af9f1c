// The OCI runtime spec the containerd runtime creates the sensor container with.
//
// Contract:
// - Pure functions: no I/O, no host lookups, no clock. The same inputs give byte-identical JSON,
//   so the spec stored in the containerd container record can be compared and reproduced.
// - buildOciSpec turns the runtime-neutral ContainerSpec plus the image's config into a complete
//   runtime-spec 1.0.2 document with the defaults ctr/nerdctl give a container (mounts,
//   capabilities, masked paths, device cgroup), the way Docker combines entrypoint/cmd/env.
// - Anything that cannot be expressed is kInvalidArgument naming the field; nothing is silently
//   dropped. Labels and log settings are not part of an OCI spec (they live on the container
//   record and in the shim's IO) and are ignored here.
// - Secret env values go into the returned JSON (the runtime needs them) and into no error message.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "runtime/container_runtime.h"

namespace qcs::runtime::containerd {

// The parts of an OCI image config ("config" object of the image config blob) a container needs.
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "NAME=value"
  std::string workingDir;
  std::string user;  // "", "0", "1000:1000", "root"
};

// Parses an OCI / Docker image config blob (the JSON whose digest is the manifest's config).
// kProtocol with a clear message when it is not JSON or has the wrong shapes. A blob without a
// "config" object (or with null fields, as Docker writes them) gives empty fields.
Result<ImageConfig> parseImageConfig(std::string_view configBlob);

struct OciSpecOptions {
  std::string containerId;  // also used for the cgroup path
  std::string nameSpace;    // containerd namespace: cgroupsPath is "/<nameSpace>/<containerId>"
  // RLIMIT_NOFILE soft and hard. The default is what a Docker container gets under dockerd's
  // systemd unit; the sensor scans many files. Raising a hard limit needs CAP_SYS_RESOURCE in the
  // shim, so where containerd runs without it and below this limit (some nested sandboxes) runc
  // fails "error setting rlimits": pass a lower value there, or 0 to leave rlimits out of the spec
  // so the sensor inherits the shim's.
  uint64_t openFilesLimit = 1048576;
};

// The OCI runtime spec (JSON text, runtime-spec 1.0.2) for spec on top of image. kInvalidArgument
// naming the field when something cannot be expressed (e.g. a user name that is not numeric and
// not "root", an unknown capability, a relative mount path, an empty command).
Result<std::string> buildOciSpec(const ContainerSpec& spec, const ImageConfig& image, const OciSpecOptions& options);

// The capability set containerd/ctr grants a non-privileged container by default, "CAP_"-prefixed, sorted.
const std::vector<std::string>& defaultCapabilities();

// Every capability of capabilities(7) as of Linux 5.9 (what a privileged container gets),
// "CAP_"-prefixed, sorted.
const std::vector<std::string>& knownCapabilities();

}  // namespace qcs::runtime::containerd
