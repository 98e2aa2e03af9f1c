// SecretSource: where the sensor's IDs (and registry passwords) come from. SPEC "Secrets".
//
// Contract: read() returns the current value, trimmed of surrounding whitespace, or an error that
// names the source (variable name, file path) and how to fix it — never the value itself.
// describe() names the source for logs and render ("env QUALYS_ACTIVATION_ID"). Values are read
// anew on each call so that a changed secret (rotated file) is noticed by the caller.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"

namespace qcs::platform {

class SecretSource {
 public:
  virtual ~SecretSource() = default;
  virtual Result<std::string> read() = 0;
  virtual std::string describe() const = 0;
  // Why the last read() served a value kept from an earlier fetch, because fetching it anew failed
  // (the error, never a value); "" when that value was current. Sources that read anew on every
  // call (a variable, a file) are never stale.
  virtual std::string staleReason() const { return {}; }
};

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The agent's own environment variable `name`.
std::unique_ptr<SecretSource> makeEnvSecret(std::string name, EnvLookup lookup);

// A file. Refuses group- or world-readable files unless the file sits in a Kubernetes Secret
// volume (recognised by the "..data" link the kubelet's atomic writer leaves in the directory),
// whose default mode is 0644 and which only the pod sees.
std::unique_ptr<SecretSource> makeFileSecret(std::string path);

// True if the text is a UUID (8-4-4-4-12 hex digits), the format of Qualys activation and
// customer IDs.
bool isUuid(const std::string& text);

}  // namespace qcs::platform
