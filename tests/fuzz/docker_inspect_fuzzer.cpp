// Fuzzes what dockerd answers to GET /containers/{id}/json and /containers/{id}/stats: the bytes
// come from a daemon socket the agent does not control.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "runtime/docker/docker_runtime.h"

using namespace qcs::runtime;
using namespace qcs::runtime::docker;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto info = parseContainerInspect(text);
  if (info.ok()) {
    FUZZ_CHECK(!info->id.empty(), "an inspect without Id must be an error");
    // Times are kept only when they parse, so the supervisor never reads an unparsable one.
    FUZZ_CHECK(info->startedAt.empty() == !info->startedAtTime.has_value(), info->startedAt);
    FUZZ_CHECK(info->finishedAt.empty() || parseRfc3339(info->finishedAt).has_value(), info->finishedAt);
    FUZZ_CHECK(std::string_view(containerStateName(info->state)).size() > 0, info->id);
    // Parsing is a pure function of the bytes.
    auto again = parseContainerInspect(text);
    FUZZ_CHECK(again.ok() && again->id == info->id && again->name == info->name && again->labels == info->labels &&
                   again->state == info->state && again->exitCode == info->exitCode,
               info->id);
  } else {
    FUZZ_CHECK(info.code() == qcs::ErrorCode::kProtocol, info.message());
    FUZZ_CHECK(!info.message().empty(), "an error without a message");
  }

  auto stats = parseContainerStats(text);
  if (stats.ok()) {
    FUZZ_CHECK(stats->cpuSeconds >= 0, "negative CPU time");
  } else {
    FUZZ_CHECK(stats.code() == qcs::ErrorCode::kProtocol, stats.message());
  }
  return 0;
}
