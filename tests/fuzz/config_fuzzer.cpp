// Fuzzes the YAML configuration: parseConfig() on the bytes, and for every accepted config the
// render/parse round trip `qcs-agent render` relies on.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/config.h"
#include "fuzz_check.h"

using namespace qcs::agent;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> warnings;
  auto config = parseConfig(yaml, &warnings);
  if (!config.ok()) {
    // Bad input is the operator's to fix: kInvalidArgument naming the key. kInternal means an
    // exception got past the loader's own checks.
    FUZZ_CHECK(config.code() == qcs::ErrorCode::kInvalidArgument, config.message());
    FUZZ_CHECK(!config.message().empty(), "an error without a message");
    return 0;
  }
  const std::string rendered = renderConfigYaml(*config);
  auto reparsed = parseConfig(rendered);
  FUZZ_CHECK(reparsed.ok(), reparsed.ok() ? rendered : reparsed.message() + "\n--- rendered:\n" + rendered);
  FUZZ_CHECK(*reparsed == *config, "render then parse changed the config:\n" + rendered);
  FUZZ_CHECK(renderConfigYaml(*reparsed) == rendered, "rendering is not stable:\n" + rendered);
  return 0;
}
