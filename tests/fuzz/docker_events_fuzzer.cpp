// Fuzzes the Docker /events stream: newline-separated JSON objects from the daemon, each mapped to
// the RuntimeEvent the supervisor acts on (or ignored).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "runtime/docker/docker_runtime.h"

using namespace qcs::runtime;
using namespace qcs::runtime::docker;

namespace {

void checkLine(std::string_view line) {
  const auto event = parseDockerEvent(line);
  if (!event) return;
  using Kind = RuntimeEvent::Kind;
  // Connection changes come from the watcher itself, never from a line the daemon sends.
  FUZZ_CHECK(event->kind == Kind::kContainerStarted || event->kind == Kind::kContainerExited ||
                 event->kind == Kind::kContainerOom || event->kind == Kind::kContainerRemoved,
             line);
  FUZZ_CHECK(!event->containerId.empty(), line);
  if (event->exitCode) {
    FUZZ_CHECK(event->kind == Kind::kContainerExited, line);
    FUZZ_CHECK(*event->exitCode >= 0 && *event->exitCode <= 999999999, line);
  }
  const auto again = parseDockerEvent(line);
  FUZZ_CHECK(again && again->kind == event->kind && again->containerId == event->containerId &&
                 again->exitCode == event->exitCode,
             line);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view stream(reinterpret_cast<const char*>(data), size);
  // The whole input as one line too: a daemon may send a line with embedded bytes of any kind.
  checkLine(stream);
  while (!stream.empty()) {
    const size_t end = stream.find('\n');
    checkLine(stream.substr(0, end));
    if (end == std::string_view::npos) break;
    stream.remove_prefix(end + 1);
  }
  return 0;
}
