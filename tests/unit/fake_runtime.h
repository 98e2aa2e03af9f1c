// An in-memory ContainerRuntime for the supervisor's unit tests: containers, images, failure
// injection and an event callback the test fires by hand. Time comes from the test's FakeClock.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "runtime/container_runtime.h"

namespace qcs::testing {

class FakeRuntime final : public runtime::ContainerRuntime {
 public:
  explicit FakeRuntime(Clock& clock) : clock_(clock) {
    info_.kind = "docker";
    info_.endpoint = "/var/run/docker.sock";
    info_.version = "fake";
    info_.apiVersion = "1.41";
  }

  // --- test controls ---
  bool down = false;             // every call fails with kUnavailable
  std::set<std::string> images;  // present images
  std::string pullError;         // non-empty: pulls fail with this message (kUnauthenticated)
  int creates = 0, starts = 0, removes = 0, pulls = 0, stops = 0;
  runtime::RuntimeEventFn onEvent;
  std::vector<std::string> logLines{"standin: alive 1", "standin: alive 2"};
  runtime::ContainerStats stats{1.5, 4 * 1024 * 1024};  // what containerStats returns
  int statsCalls = 0;
  // Health probes: what execInContainer answers (an exit code, or an error such as kTimeout),
  // and when the container last wrote output (nullopt: never).
  Result<int> execResult = 0;
  int execCalls = 0;
  std::vector<std::string> lastExecCommand;
  std::chrono::milliseconds lastExecTimeout{0};
  std::optional<WallTime> lastOutput;
  int lastOutputCalls = 0;

  runtime::ContainerInfo& container(const std::string& id) { return containers_.at(id); }
  std::vector<runtime::ContainerInfo> all() const {
    std::vector<runtime::ContainerInfo> out;
    for (const auto& [id, c] : containers_) out.push_back(c);
    return out;
  }
  // Simulates the process exiting (as docker kill/crash/OOM would).
  void exitContainer(const std::string& id, int code, bool oom = false) {
    auto& c = containers_.at(id);
    c.state = runtime::ContainerState::kExited;
    c.exitCode = code;
    c.oomKilled = oom;
    c.finishedAt = "t" + std::to_string(++tick_);
    if (onEvent) onEvent({runtime::RuntimeEvent::Kind::kContainerExited, id, code, ""});
  }
  // Adds a container as if someone else had created it.
  std::string addContainer(const std::string& name, std::map<std::string, std::string> labels, bool running) {
    std::string id = "id" + std::to_string(++nextId_) + "0000000000000000";
    runtime::ContainerInfo c;
    c.id = id;
    c.name = name;
    c.labels = std::move(labels);
    c.state = running ? runtime::ContainerState::kRunning : runtime::ContainerState::kExited;
    c.startedAtTime = clock_.wallNow();
    containers_[id] = c;
    return id;
  }
  void deleteContainer(const std::string& id) {
    containers_.erase(id);
    if (onEvent) onEvent({runtime::RuntimeEvent::Kind::kContainerRemoved, id, std::nullopt, ""});
  }
  const runtime::ContainerSpec& lastSpec() const { return lastSpec_; }

  // --- ContainerRuntime ---
  const runtime::RuntimeInfo& info() const override { return info_; }
  Status ping() override { return down ? unavailable() : okStatus(); }

  Result<std::vector<runtime::ContainerInfo>> listContainers(
      const std::map<std::string, std::string>& labels) override {
    if (down) return unavailable();
    std::vector<runtime::ContainerInfo> out;
    for (const auto& [id, c] : containers_) {
      bool match = true;
      for (const auto& [k, v] : labels) {
        auto it = c.labels.find(k);
        if (it == c.labels.end() || it->second != v) match = false;
      }
      if (match) out.push_back(c);
    }
    return out;
  }
  Result<runtime::ContainerInfo> inspectContainer(const std::string& nameOrId) override {
    if (down) return unavailable();
    for (const auto& [id, c] : containers_) {
      if (id == nameOrId || c.name == nameOrId) return c;
    }
    return makeError(ErrorCode::kNotFound, "no such container");
  }
  Result<bool> imagePresent(const std::string& reference) override {
    if (down) return unavailable();
    return images.count(reference) > 0;
  }
  Status pullImage(const std::string& reference, const std::optional<runtime::RegistryCredentials>& credentials,
                   const runtime::PullProgressFn& progress) override {
    if (down) return unavailable();
    ++pulls;
    lastCredentials = credentials;
    if (!pullError.empty()) return makeError(ErrorCode::kUnauthenticated, pullError);
    if (progress) progress({"Pulling from fake", ""});
    images.insert(reference);
    return okStatus();
  }
  Result<std::string> imageId(const std::string&) override { return std::string("sha256:fake"); }
  Result<std::string> createContainer(const runtime::ContainerSpec& spec) override {
    if (down) return unavailable();
    for (const auto& [id, c] : containers_) {
      if (c.name == spec.name) return makeError(ErrorCode::kAlreadyExists, "name in use");
    }
    if (!images.count(spec.image)) return makeError(ErrorCode::kNotFound, "no such image");
    ++creates;
    lastSpec_ = spec;
    std::string id = addContainer(spec.name, spec.labels, false);
    containers_[id].state = runtime::ContainerState::kCreated;
    containers_[id].image = spec.image;
    return id;
  }
  Status startContainer(const std::string& id) override {
    if (down) return unavailable();
    auto it = containers_.find(id);
    if (it == containers_.end()) return makeError(ErrorCode::kNotFound, "no such container");
    ++starts;
    it->second.state = runtime::ContainerState::kRunning;
    it->second.startedAtTime = clock_.wallNow();
    it->second.startedAt = "s" + std::to_string(++tick_);
    return okStatus();
  }
  Status stopContainer(const std::string& id, std::chrono::seconds) override {
    if (down) return unavailable();
    ++stops;
    auto it = containers_.find(id);
    if (it == containers_.end()) return makeError(ErrorCode::kNotFound, "no such container");
    if (it->second.state != runtime::ContainerState::kRunning) return okStatus();
    exitContainer(id, 143);  // as Docker: the stop ends the process and reports its death
    return okStatus();
  }
  Status removeContainer(const std::string& id, bool) override {
    if (down) return unavailable();
    if (!containers_.erase(id)) return makeError(ErrorCode::kNotFound, "no such container");
    ++removes;
    return okStatus();
  }
  Result<std::vector<std::string>> logTail(const std::string&, int) override { return logLines; }
  Result<runtime::ContainerStats> containerStats(const std::string& id) override {
    if (down) return unavailable();
    ++statsCalls;
    if (!containers_.count(id)) return makeError(ErrorCode::kNotFound, "no such container");
    return stats;
  }

  Result<int> execInContainer(const std::string& id, const std::vector<std::string>& command,
                              std::chrono::milliseconds timeout) override {
    if (down) return unavailable();
    ++execCalls;
    lastExecCommand = command;
    lastExecTimeout = timeout;
    auto it = containers_.find(id);
    if (it == containers_.end()) return makeError(ErrorCode::kNotFound, "no such container");
    if (it->second.state != runtime::ContainerState::kRunning) {
      return makeError(ErrorCode::kConflict, "container is not running");
    }
    return execResult;
  }
  Result<std::optional<WallTime>> lastOutputTime(const std::string& id, WallTime since) override {
    if (down) return unavailable();
    ++lastOutputCalls;
    if (!containers_.count(id)) return makeError(ErrorCode::kNotFound, "no such container");
    if (lastOutput && *lastOutput >= since) return lastOutput;
    return std::optional<WallTime>();
  }

  class Watcher final : public runtime::EventWatcher {};
  std::unique_ptr<runtime::EventWatcher> watchEvents(const std::map<std::string, std::string>&,
                                                     runtime::RuntimeEventFn fn) override {
    onEvent = std::move(fn);
    return std::make_unique<Watcher>();
  }

  runtime::LeftoverCleanup removeLeftovers() override {
    ++leftoverSweeps;
    return leftovers;
  }

  std::optional<runtime::RegistryCredentials> lastCredentials;
  int leftoverSweeps = 0;
  runtime::LeftoverCleanup leftovers;  // what removeLeftovers answers

 private:
  static Error unavailable() { return makeError(ErrorCode::kUnavailable, "fake runtime is down"); }

  Clock& clock_;
  runtime::RuntimeInfo info_;
  std::map<std::string, runtime::ContainerInfo> containers_;
  runtime::ContainerSpec lastSpec_;
  int nextId_ = 0;
  int tick_ = 0;
};

// Hands the supervisor a runtime that forwards to a FakeRuntime the test keeps.
class ForwardingRuntime : public runtime::ContainerRuntime {
 public:
  explicit ForwardingRuntime(runtime::ContainerRuntime& target) : t_(target) {}
  const runtime::RuntimeInfo& info() const override { return t_.info(); }
  Status ping() override { return t_.ping(); }
  Result<std::vector<runtime::ContainerInfo>> listContainers(const std::map<std::string, std::string>& l) override {
    return t_.listContainers(l);
  }
  Result<runtime::ContainerInfo> inspectContainer(const std::string& n) override { return t_.inspectContainer(n); }
  Result<bool> imagePresent(const std::string& r) override { return t_.imagePresent(r); }
  Status pullImage(const std::string& r, const std::optional<runtime::RegistryCredentials>& c,
                   const runtime::PullProgressFn& p) override {
    return t_.pullImage(r, c, p);
  }
  Result<std::string> imageId(const std::string& r) override { return t_.imageId(r); }
  Result<std::string> createContainer(const runtime::ContainerSpec& s) override { return t_.createContainer(s); }
  Status startContainer(const std::string& id) override { return t_.startContainer(id); }
  Status stopContainer(const std::string& id, std::chrono::seconds g) override { return t_.stopContainer(id, g); }
  Status removeContainer(const std::string& id, bool f) override { return t_.removeContainer(id, f); }
  Result<std::vector<std::string>> logTail(const std::string& id, int n) override { return t_.logTail(id, n); }
  Result<runtime::ContainerStats> containerStats(const std::string& id) override { return t_.containerStats(id); }
  Result<int> execInContainer(const std::string& id, const std::vector<std::string>& c,
                              std::chrono::milliseconds t) override {
    return t_.execInContainer(id, c, t);
  }
  Result<std::optional<std::chrono::system_clock::time_point>> lastOutputTime(
      const std::string& id, std::chrono::system_clock::time_point since) override {
    return t_.lastOutputTime(id, since);
  }
  std::unique_ptr<runtime::EventWatcher> watchEvents(const std::map<std::string, std::string>& l,
                                                     runtime::RuntimeEventFn fn) override {
    return t_.watchEvents(l, std::move(fn));
  }
  runtime::LeftoverCleanup removeLeftovers() override { return t_.removeLeftovers(); }

 private:
  runtime::ContainerRuntime& t_;
};

}  // namespace qcs::testing
