#include "runtime/containerd/cgroup_metrics.h"

#include <google/protobuf/any.pb.h>

#include <cstdint>
#include <limits>
#include <string>

#include "github.com/containerd/cgroups/stats/v1/metrics.pb.h"
#include "github.com/containerd/cgroups/v2/stats/metrics.pb.h"
#include "runtime/containerd/grpc_support.h"

namespace qcs::runtime::containerd {

namespace {

namespace cgroups_v1 = ::io::containerd::cgroups::v1;
namespace cgroups_v2 = ::io::containerd::cgroups::v2;

constexpr double kNanosPerSecond = 1e9;
constexpr double kMicrosPerSecond = 1e6;

// The kernel's counters are unsigned; a reading of inactive file cache above usage happens when
// the two are sampled at slightly different moments, and must not wrap to a huge working set.
int64_t workingSet(uint64_t usage, uint64_t inactiveFile) {
  if (inactiveFile >= usage) return 0;
  const uint64_t bytes = usage - inactiveFile;
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  return static_cast<int64_t>(bytes > kMax ? kMax : bytes);
}

std::string messageName(const std::string& typeUrl) {
  const auto slash = typeUrl.rfind('/');
  return slash == std::string::npos ? typeUrl : typeUrl.substr(slash + 1);
}

Error unparsable(const google::protobuf::Any& data, const std::string& type) {
  return makeError(ErrorCode::kProtocol, "containerd task metrics: the " + std::to_string(data.value().size()) +
                                             "-byte payload of type " + type +
                                             " does not parse; containerd and the agent disagree on its "
                                             "schema (report the containerd version)");
}

}  // namespace

Result<ContainerStats> statsFromMetric(const google::protobuf::Any& data) {
  const std::string name = messageName(data.type_url());
  ContainerStats stats;
  if (name == kCgroupV1MetricsType) {
    cgroups_v1::Metrics metrics;
    if (!detail::unpackAny(data, metrics)) return unparsable(data, name);
    stats.cpuSeconds = static_cast<double>(metrics.cpu().usage().total()) / kNanosPerSecond;
    stats.memoryBytes = workingSet(metrics.memory().usage().usage(), metrics.memory().total_inactive_file());
    return stats;
  }
  if (name == kCgroupV2MetricsType) {
    cgroups_v2::Metrics metrics;
    if (!detail::unpackAny(data, metrics)) return unparsable(data, name);
    stats.cpuSeconds = static_cast<double>(metrics.cpu().usage_usec()) / kMicrosPerSecond;
    stats.memoryBytes = workingSet(metrics.memory().usage(), metrics.memory().inactive_file());
    return stats;
  }
  const std::string shown = data.type_url().empty() ? "(empty type URL)" : "'" + data.type_url() + "'";
  return makeError(ErrorCode::kProtocol, "containerd task metrics: unexpected payload type " + shown +
                                             "; the agent reads " + kCgroupV1MetricsType + " and " +
                                             kCgroupV2MetricsType + " (cgroup v1 and v2)");
}

}  // namespace qcs::runtime::containerd
