#include "agent/instrumented_runtime.h"

namespace qcs::agent {

InstrumentedRuntime::InstrumentedRuntime(std::unique_ptr<runtime::ContainerRuntime> inner, RuntimeObserver& observer,
                                         const Clock& clock)
    : inner_(std::move(inner)), observer_(observer), clock_(clock) {}

template <typename Fn>
auto InstrumentedRuntime::timed(const char* op, Fn&& call) {
  const SteadyTime started = clock_.now();
  auto result = call();
  const double seconds = std::chrono::duration<double>(clock_.now() - started).count();
  const bool failed = !result.ok() && result.code() != ErrorCode::kNotFound;
  observer_.runtimeCall(inner_->info().kind, op, seconds, failed);
  return result;
}

Status InstrumentedRuntime::ping() {
  return timed("ping", [&] { return inner_->ping(); });
}

Result<std::vector<runtime::ContainerInfo>> InstrumentedRuntime::listContainers(
    const std::map<std::string, std::string>& labels) {
  return timed("list_containers", [&] { return inner_->listContainers(labels); });
}

Result<runtime::ContainerInfo> InstrumentedRuntime::inspectContainer(const std::string& nameOrId) {
  return timed("inspect_container", [&] { return inner_->inspectContainer(nameOrId); });
}

Result<bool> InstrumentedRuntime::imagePresent(const std::string& reference) {
  return timed("image_present", [&] { return inner_->imagePresent(reference); });
}

Status InstrumentedRuntime::pullImage(const std::string& reference,
                                      const std::optional<runtime::RegistryCredentials>& credentials,
                                      const runtime::PullProgressFn& progress) {
  return timed("pull_image", [&] { return inner_->pullImage(reference, credentials, progress); });
}

Result<std::string> InstrumentedRuntime::imageId(const std::string& reference) {
  return timed("image_id", [&] { return inner_->imageId(reference); });
}

Result<std::string> InstrumentedRuntime::createContainer(const runtime::ContainerSpec& spec) {
  return timed("create_container", [&] { return inner_->createContainer(spec); });
}

Status InstrumentedRuntime::startContainer(const std::string& id) {
  return timed("start_container", [&] { return inner_->startContainer(id); });
}

Status InstrumentedRuntime::stopContainer(const std::string& id, std::chrono::seconds grace) {
  return timed("stop_container", [&] { return inner_->stopContainer(id, grace); });
}

Status InstrumentedRuntime::removeContainer(const std::string& id, bool force) {
  return timed("remove_container", [&] { return inner_->removeContainer(id, force); });
}

Result<std::vector<std::string>> InstrumentedRuntime::logTail(const std::string& id, int lines) {
  return timed("log_tail", [&] { return inner_->logTail(id, lines); });
}

Result<runtime::ContainerStats> InstrumentedRuntime::containerStats(const std::string& id) {
  return timed("container_stats", [&] { return inner_->containerStats(id); });
}

Result<int> InstrumentedRuntime::execInContainer(const std::string& id, const std::vector<std::string>& command,
                                                 std::chrono::milliseconds timeout) {
  return timed("exec_in_container", [&] { return inner_->execInContainer(id, command, timeout); });
}

Result<std::optional<WallTime>> InstrumentedRuntime::lastOutputTime(const std::string& id, WallTime since) {
  return timed("last_output_time", [&] { return inner_->lastOutputTime(id, since); });
}

std::unique_ptr<runtime::EventWatcher> InstrumentedRuntime::watchEvents(
    const std::map<std::string, std::string>& labels, runtime::RuntimeEventFn onEvent) {
  return inner_->watchEvents(labels, std::move(onEvent));
}

}  // namespace qcs::agent
