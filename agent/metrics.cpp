#include "agent/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <string_view>
#include <vector>

#include "agent/metrics_text.h"
#include "common/file_descriptor.h"

namespace qcs::agent {

namespace {

const RestartReason kAllRestartReasons[] = {RestartReason::kExit,  RestartReason::kOom,       RestartReason::kMissing,
                                            RestartReason::kDrift, RestartReason::kUnhealthy, RestartReason::kRuntime};

// Sets a counter to a value that only ever grows (the supervisor's counts never go down).
void advanceTo(prometheus::Counter& counter, double value) {
  const double delta = value - counter.Value();
  if (delta > 0) counter.Increment(delta);
}

// Appends a /proc file to `out`, up to `limit` bytes. Leaves `out` as it was when the file cannot be
// opened (every /proc/self file the agent reads exists while it runs).
void readProcFile(const char* path, size_t limit, std::string& out) {
  const FileDescriptor fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return;
  constexpr size_t kChunk = 4096;
  while (out.size() < limit) {
    const size_t used = out.size();
    out.resize(std::min(used + kChunk, limit));
    const ssize_t n = ::read(fd.get(), out.data() + used, out.size() - used);
    out.resize(used + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
  }
}

// /proc/stat's btime (seconds since the epoch); 0 when it is missing. Read once: it never changes,
// and reading /proc/stat makes the kernel format every CPU's and every interrupt's counters.
double readBootTime() {
  std::string text;
  readProcFile("/proc/stat", size_t{64} << 20, text);
  constexpr std::string_view kKey = "btime ";
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    const std::string_view line(text.data() + pos, end - pos);
    if (line.starts_with(kKey)) {
      uint64_t seconds = 0;
      std::from_chars(line.data() + kKey.size(), line.data() + line.size(), seconds);
      return static_cast<double>(seconds);
    }
    pos = end + 1;
  }
  return 0;
}

// Parses a whole /proc/self/stat field as an unsigned or signed integer.
template <typename T>
Result<T> statField(const std::array<std::string_view, 22>& fields, size_t index) {
  const std::string_view field = fields[index];
  T value{};
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
  if (ec != std::errc() || end != field.data() + field.size()) {
    // fields[0] is the file's field 3 (state), which proc(5) numbers from 1.
    return makeError(ErrorCode::kInternal, "/proc/self/stat field " + std::to_string(index + 3) +
                                               " is not a number: '" + std::string(field) + "'");
  }
  return value;
}

}  // namespace

Result<ProcessStats> readProcessStats() {
  // /proc/self/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so fields
  // are counted from the last ')'. The whole line is under 1 KiB: one allocation holds it.
  std::string stat;
  stat.reserve(4096);
  readProcFile("/proc/self/stat", 4096, stat);
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return makeError(ErrorCode::kInternal, "cannot read /proc/self/stat");
  // f[0] is field 3 (state): utime 14, stime 15, starttime 22, vsize 23, rss 24.
  std::array<std::string_view, 22> f;
  size_t count = 0;
  for (size_t pos = close + 1; count < f.size();) {
    pos = stat.find_first_not_of(" \n", pos);
    if (pos == std::string::npos) break;
    const size_t end = std::min(stat.find_first_of(" \n", pos), stat.size());
    f[count++] = std::string_view(stat.data() + pos, end - pos);
    pos = end;
  }
  if (count < f.size()) return makeError(ErrorCode::kInternal, "/proc/self/stat has too few fields");
  const auto utime = statField<uint64_t>(f, 11);
  if (!utime) return utime.error();
  const auto stime = statField<uint64_t>(f, 12);
  if (!stime) return stime.error();
  const auto startTicks = statField<uint64_t>(f, 19);
  if (!startTicks) return startTicks.error();
  const auto vsize = statField<int64_t>(f, 20);
  if (!vsize) return vsize.error();
  const auto rssPages = statField<int64_t>(f, 21);
  if (!rssPages) return rssPages.error();

  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const int64_t pageSize = sysconf(_SC_PAGESIZE);
  ProcessStats stats;
  stats.cpuSeconds = (static_cast<double>(*utime) + static_cast<double>(*stime)) / ticks;
  stats.virtualBytes = *vsize;
  stats.residentBytes = *rssPages * pageSize;
  static const double bootTime = readBootTime();
  stats.startTimeSeconds = bootTime + static_cast<double>(*startTicks) / ticks;

  // Counts the directory's own descriptor too, as every reader of /proc/self/fd does.
  if (const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc/self/fd"), &::closedir); dir) {
    while (const dirent* entry = ::readdir(dir.get())) {
      const std::string_view name = entry->d_name;
      if (name != "." && name != "..") ++stats.openFds;
    }
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    stats.maxFds = limit.rlim_cur == RLIM_INFINITY ? -1 : static_cast<int64_t>(limit.rlim_cur);
  }
  return stats;
}

Metrics::Metrics(const std::string& version, const std::string& revision)
    : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  auto& r = *registry_;

  BuildGauge()
      .Name("qcs_agent_build_info")
      .Help("The agent's version and source revision (always 1)")
      .Register(r)
      .Add({{"version", version}, {"revision", revision}})
      .Set(1);
  agentInfo_ = &BuildGauge()
                    .Name("qcs_agent_info")
                    .Help("Where the agent runs: cloud, orchestrator, region, zone and ECS cluster (always 1)")
                    .Register(r);
  runtimeUp_ = &BuildGauge().Name("qcs_runtime_up").Help("1 when the container runtime answers").Register(r);
  eventStreamUp_ = &BuildGauge()
                        .Name("qcs_runtime_event_stream_up")
                        .Help("1 when the runtime's event stream is connected (else exits are seen by reconcile only)")
                        .Register(r);
  eventStreamLosses_ = &BuildCounter()
                            .Name("qcs_runtime_event_stream_losses_total")
                            .Help("Times the runtime's event stream was lost")
                            .Register(r)
                            .Add({});
  runtimeDuration_ = &BuildHistogram()
                          .Name("qcs_runtime_request_duration_seconds")
                          .Help("Duration of calls to the container runtime, by operation")
                          .Register(r);
  runtimeErrors_ = &BuildCounter()
                        .Name("qcs_runtime_errors_total")
                        .Help("Failed calls to the container runtime, by operation (not-found answers excluded)")
                        .Register(r);
  sensorUp_ = &BuildGauge().Name("qcs_sensor_up").Help("1 when the sensor container runs").Register(r).Add({});
  auto& state = BuildGauge().Name("qcs_sensor_state").Help("The supervisor's sensor state (one-hot)").Register(r);
  for (SensorState s : kAllSensorStates) sensorState_[s] = &state.Add({{"state", sensorStateName(s)}});
  auto& restarts =
      BuildCounter().Name("qcs_sensor_restarts_total").Help("Sensor restarts by the agent, by reason").Register(r);
  for (RestartReason reason : kAllRestartReasons)
    restarts_[reason] = &restarts.Add({{"reason", restartReasonName(reason)}});
  lastExitCode_ = &BuildGauge()
                       .Name("qcs_sensor_last_exit_code")
                       .Help("Exit code of the sensor's last exit (-1 before any exit)")
                       .Register(r)
                       .Add({});
  startTime_ = &BuildGauge()
                    .Name("qcs_sensor_start_time_seconds")
                    .Help("When the running sensor started, seconds since the Unix epoch (0 when not running)")
                    .Register(r)
                    .Add({});
  oomKills_ =
      &BuildCounter().Name("qcs_sensor_oom_kills_total").Help("Sensor exits by the OOM killer").Register(r).Add({});
  backoff_ = &BuildGauge()
                  .Name("qcs_sensor_backoff_seconds")
                  .Help("The restart delay being waited now (0 when none)")
                  .Register(r)
                  .Add({});
  sensorCpu_ = &BuildCounter()
                    .Name("qcs_sensor_cpu_seconds_total")
                    .Help("CPU time used by the sensor containers, sampled periodically")
                    .Register(r)
                    .Add({});
  sensorMemory_ = &BuildGauge()
                       .Name("qcs_sensor_memory_bytes")
                       .Help("The sensor's memory working set (usage minus page cache), sampled periodically")
                       .Register(r)
                       .Add({});
  pullDuration_ = &BuildHistogram()
                       .Name("qcs_image_pull_duration_seconds")
                       .Help("Duration of sensor image pulls")
                       .Register(r)
                       .Add({}, prometheus::Histogram::BucketBoundaries{1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800});
  auto& pulls = BuildCounter().Name("qcs_image_pulls_total").Help("Sensor image pulls, by result").Register(r);
  pullsSucceeded_ = &pulls.Add({{"result", "success"}});
  pullsFailed_ = &pulls.Add({{"result", "failure"}});

  processCpu_ = &BuildCounter()
                     .Name("process_cpu_seconds_total")
                     .Help("Total user and system CPU time spent in seconds")
                     .Register(r)
                     .Add({});
  processResident_ =
      &BuildGauge().Name("process_resident_memory_bytes").Help("Resident memory size in bytes").Register(r).Add({});
  processVirtual_ =
      &BuildGauge().Name("process_virtual_memory_bytes").Help("Virtual memory size in bytes").Register(r).Add({});
  processOpenFds_ = &BuildGauge().Name("process_open_fds").Help("Number of open file descriptors").Register(r).Add({});
  processMaxFds_ =
      &BuildGauge().Name("process_max_fds").Help("Maximum number of open file descriptors").Register(r).Add({});
  processStart_ = &BuildGauge()
                       .Name("process_start_time_seconds")
                       .Help("Start time of the process since unix epoch in seconds")
                       .Register(r)
                       .Add({});
}

Metrics::~Metrics() = default;

void Metrics::setPlatform(const platform::PlatformInfo& platform) {
  std::lock_guard lock(mu_);
  // One series at a time: a second detection replaces the first.
  for (prometheus::Gauge* old : agentInfoSeries_) agentInfo_->Remove(old);
  agentInfoSeries_.clear();
  auto& gauge = agentInfo_->Add({{"cloud", platform.cloud},
                                 {"orchestrator", platform.orchestrator},
                                 {"region", platform.region},
                                 {"zone", platform.zone},
                                 {"cluster", platform.cluster}});
  gauge.Set(1);
  agentInfoSeries_.push_back(&gauge);
}

void Metrics::runtimeCall(const std::string& runtime, const char* op, double seconds, bool failed) {
  // Family::Add returns the existing child for known labels; the family locks itself.
  const prometheus::Labels labels{{"runtime", runtime}, {"op", op}};
  runtimeDuration_
      ->Add(labels,
            prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60})
      .Observe(seconds);
  auto& errors = runtimeErrors_->Add(labels);
  if (failed) errors.Increment();
}

void Metrics::update(const SupervisorStatus& s) {
  const std::string kind = s.runtimeKind.empty() ? "unknown" : s.runtimeKind;
  if (!lastRuntimeKind_.empty() && lastRuntimeKind_ != kind) {
    runtimeUp_->Add({{"runtime", lastRuntimeKind_}}).Set(0);
    eventStreamUp_->Add({{"runtime", lastRuntimeKind_}}).Set(0);
  }
  lastRuntimeKind_ = kind;
  runtimeUp_->Add({{"runtime", kind}}).Set(s.runtimeUp ? 1 : 0);
  eventStreamUp_->Add({{"runtime", kind}}).Set(s.eventStreamConnected ? 1 : 0);
  advanceTo(*eventStreamLosses_, static_cast<double>(s.eventStreamLosses));

  const bool running = s.state == SensorState::kRunning;
  sensorUp_->Set(running ? 1 : 0);
  for (auto& [state, gauge] : sensorState_) gauge->Set(state == s.state ? 1 : 0);
  for (auto& [reason, counter] : restarts_) {
    auto it = s.restarts.find(reason);
    advanceTo(*counter, it == s.restarts.end() ? 0 : static_cast<double>(it->second));
  }
  lastExitCode_->Set(s.lastExitCode ? *s.lastExitCode : -1);
  startTime_->Set(
      running && s.sensorStartedAt ? std::chrono::duration<double>(s.sensorStartedAt->time_since_epoch()).count() : 0);
  advanceTo(*oomKills_, static_cast<double>(s.oomKills));
  backoff_->Set(s.backoffSeconds);

  if (!s.statsContainerId.empty()) {
    // A new container, or the same one started again, counts from zero: keep what the old used.
    if (s.statsContainerId != cpuContainerId_ || s.sensorCpuSeconds < cpuCurrent_) {
      cpuCarried_ += cpuCurrent_;
      cpuCurrent_ = 0;
      cpuContainerId_ = s.statsContainerId;
    }
    cpuCurrent_ = s.sensorCpuSeconds;
  }
  advanceTo(*sensorCpu_, cpuCarried_ + cpuCurrent_);
  sensorMemory_->Set(running && s.statsContainerId == s.containerId ? static_cast<double>(s.sensorMemoryBytes) : 0);

  // The status keeps the last pull's duration: each pull finished since the last scrape is observed
  // with it (pulls are rare next to scrapes, so this is nearly always exact).
  const uint64_t pulls = s.pullsSucceeded + s.pullsFailed;
  for (; pullsSeen_ < pulls; ++pullsSeen_) pullDuration_->Observe(s.lastPullSeconds);
  advanceTo(*pullsSucceeded_, static_cast<double>(s.pullsSucceeded));
  advanceTo(*pullsFailed_, static_cast<double>(s.pullsFailed));

  if (auto process = readProcessStats()) {
    advanceTo(*processCpu_, process->cpuSeconds);
    processResident_->Set(static_cast<double>(process->residentBytes));
    processVirtual_->Set(static_cast<double>(process->virtualBytes));
    processOpenFds_->Set(static_cast<double>(process->openFds));
    processMaxFds_->Set(static_cast<double>(process->maxFds));
    processStart_->Set(process->startTimeSeconds);
  }
}

std::string Metrics::render(const SupervisorStatus& status) {
  std::lock_guard lock(mu_);
  update(status);
  return serializeTextFormat(registry_->Collect());
}

}  // namespace qcs::agent
