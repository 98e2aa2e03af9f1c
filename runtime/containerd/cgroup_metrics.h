// Decoding of containerd's Tasks.Metrics payload into the runtime's ContainerStats.
//
// Contract:
// - The payload is the `data` Any of a containerd.types.Metric: io.containerd.cgroups.v1.Metrics on
//   cgroup v1 hosts, io.containerd.cgroups.v2.Metrics on cgroup v2 hosts. The type URL may be the
//   bare message name (what containerd sends) or carry a "<host>/" prefix; both are accepted.
// - cpuSeconds is cumulative CPU time (v1 cpu.usage.total in ns; v2 cpu.usage_usec).
// - memoryBytes is the working set as `docker stats` and the kubelet show it: usage minus the
//   inactive file cache (v1: memory.usage.usage - memory.total_inactive_file; v2: memory.usage -
//   memory.inactive_file), never below 0. A section containerd left out (a controller the cgroup
//   does not have) counts as 0.
// - Any other type, or bytes that do not parse as the named type, is kProtocol naming the type.
// - Pure function: no I/O, thread-safe.
#pragma once

#include "common/result.h"
#include "runtime/container_runtime.h"

namespace google::protobuf {
class Any;
}

namespace qcs::runtime::containerd {

inline constexpr const char* kCgroupV1MetricsType = "io.containerd.cgroups.v1.Metrics";
inline constexpr const char* kCgroupV2MetricsType = "io.containerd.cgroups.v2.Metrics";

// One Tasks.Metrics payload -> a stats sample.
Result<ContainerStats> statsFromMetric(const google::protobuf::Any& data);

}  // namespace qcs::runtime::containerd
