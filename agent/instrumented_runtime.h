// InstrumentedRuntime: a ContainerRuntime decorator that times every call and reports it, by
// operation name, to a RuntimeObserver (the metrics). The runtime clients themselves stay free of
// metrics code.
//
// A call counts as failed when it returns an error other than kNotFound: "no such container" is an
// answer, not a fault of the runtime. watchEvents() is long-lived and is not timed; info() is local;
// removeLeftovers() is forwarded as it is.
#pragma once

#include <memory>
#include <string>

#include "common/clock.h"
#include "runtime/container_runtime.h"

namespace qcs::agent {

class RuntimeObserver {
 public:
  virtual ~RuntimeObserver() = default;
  // runtime: RuntimeInfo::kind; op: "ping", "inspect_container", ...; thread-safe.
  virtual void runtimeCall(const std::string& runtime, const char* op, double seconds, bool failed) = 0;
};

class InstrumentedRuntime final : public runtime::ContainerRuntime {
 public:
  InstrumentedRuntime(std::unique_ptr<runtime::ContainerRuntime> inner, RuntimeObserver& observer, const Clock& clock);

  const runtime::RuntimeInfo& info() const override { return inner_->info(); }
  Status ping() override;
  Result<std::vector<runtime::ContainerInfo>> listContainers(const std::map<std::string, std::string>& labels) override;
  Result<runtime::ContainerInfo> inspectContainer(const std::string& nameOrId) override;
  Result<bool> imagePresent(const std::string& reference) override;
  Status pullImage(const std::string& reference, const std::optional<runtime::RegistryCredentials>& credentials,
                   const runtime::PullProgressFn& progress) override;
  Result<std::string> imageId(const std::string& reference) override;
  Result<std::string> createContainer(const runtime::ContainerSpec& spec) override;
  Status startContainer(const std::string& id) override;
  Status stopContainer(const std::string& id, std::chrono::seconds grace) override;
  Status removeContainer(const std::string& id, bool force) override;
  Result<std::vector<std::string>> logTail(const std::string& id, int lines) override;
  Result<runtime::ContainerStats> containerStats(const std::string& id) override;
  Result<int> execInContainer(const std::string& id, const std::vector<std::string>& command,
                              std::chrono::milliseconds timeout) override;
  Result<std::optional<WallTime>> lastOutputTime(const std::string& id, WallTime since) override;
  std::unique_ptr<runtime::EventWatcher> watchEvents(const std::map<std::string, std::string>& labels,
                                                     runtime::RuntimeEventFn onEvent) override;
  // Forwarded untimed: once per connection, and its failures are per object, not the call's.
  runtime::LeftoverCleanup removeLeftovers() override { return inner_->removeLeftovers(); }

 private:
  template <typename Fn>
  auto timed(const char* op, Fn&& call);

  std::unique_ptr<runtime::ContainerRuntime> inner_;
  RuntimeObserver& observer_;
  const Clock& clock_;
};

}  // namespace qcs::agent
