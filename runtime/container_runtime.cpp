#include "runtime/container_runtime.h"

namespace qcs::runtime {

const char* containerStateName(ContainerState state) {
  switch (state) {
    case ContainerState::kCreated: return "created";
    case ContainerState::kRunning: return "running";
    case ContainerState::kPaused: return "paused";
    case ContainerState::kRestarting: return "restarting";
    case ContainerState::kExited: return "exited";
    case ContainerState::kDead: return "dead";
    case ContainerState::kRemoving: return "removing";
    case ContainerState::kUnknown: return "unknown";
  }
  return "unknown";
}

}  // namespace qcs::runtime
