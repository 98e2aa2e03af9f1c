#include "agent/app.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "agent/check.h"
#include "agent/components.h"
#include "agent/config.h"
#include "agent/http_server.h"
#include "agent/instrumented_runtime.h"
#include "agent/journald.h"
#include "agent/logging.h"
#include "agent/metrics.h"
#include "agent/notifier.h"
#include "agent/sensor_spec.h"
#include "agent/supervisor.h"
#include "agent/version.h"
#include "platform/registry_auth.h"
#include "platform/secrets.h"
#include "runtime/containerd/containerd_runtime.h"
#include "runtime/detect.h"

namespace qcs::agent {

namespace {

struct CommonOptions {
  std::string configPath = "/etc/qcs-agent/agent.yaml";
  std::vector<std::string> sets;
  std::string runtimeKind, endpoint, hostRoot, image, pullPolicy, logLevel, logFormat, listen;
};

void addCommonOptions(CLI::App& app, CommonOptions& o) {
  app.add_option("-c,--config", o.configPath, "Configuration file")->capture_default_str();
  app.add_option("--set", o.sets, "Override a configuration key: --set sensor.pull_policy=always (repeatable)");
  app.add_option("--runtime", o.runtimeKind, "runtime.kind: auto | docker | containerd");
  app.add_option("--endpoint", o.endpoint, "runtime.endpoint: the runtime socket (default: detect)");
  app.add_option("--host-root", o.hostRoot, "runtime.host_root: where the host's / is mounted (/host in a pod)");
  app.add_option("--image", o.image, "sensor.image");
  app.add_option("--pull-policy", o.pullPolicy, "sensor.pull_policy: always | if-not-present | never");
  app.add_option("--log-level", o.logLevel, "logging.level: trace | debug | info | warn | error");
  app.add_option("--log-format", o.logFormat, "logging.format: text | json");
  app.add_option("--listen", o.listen, "http.listen: address:port of the HTTP endpoints");
}

Result<Config> loadFromOptions(const CommonOptions& o, bool configExplicit, std::vector<std::string>& warnings) {
  LoadOptions load;
  load.path = o.configPath;
  load.pathExplicit = configExplicit;
  load.environment = processEnvironment();
  for (const auto& set : o.sets) {
    auto eq = set.find('=');
    if (eq == std::string::npos) {
      return makeError(ErrorCode::kInvalidArgument, "--set " + set + ": expected key=value");
    }
    load.overrides.emplace_back(set.substr(0, eq), set.substr(eq + 1));
  }
  auto flag = [&](const std::string& key, const std::string& value) {
    if (!value.empty()) load.overrides.emplace_back(key, value);
  };
  flag("runtime.kind", o.runtimeKind);
  flag("runtime.endpoint", o.endpoint);
  flag("runtime.host_root", o.hostRoot);
  flag("sensor.image", o.image);
  flag("sensor.pull_policy", o.pullPolicy);
  flag("logging.level", o.logLevel);
  flag("logging.format", o.logFormat);
  flag("http.listen", o.listen);
  return loadConfig(load, &warnings);
}

int configError(const std::string& message) {
  std::cerr << "qcs-agent: configuration error (exit 78, no container was touched):\n" << message << "\n";
  return kExitConfig;
}

// Blocks the stop signals in every thread and turns them into requestStop() on a thread of
// their own, so that no work happens in a signal handler.
class SignalThread {
 public:
  explicit SignalThread(std::function<void(int)> onSignal) : onSignal_(std::move(onSignal)) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] {
      for (;;) {
        int sig = 0;
        if (sigwait(&set_, &sig) != 0) continue;
        if (sig == SIGUSR1) return;  // our own "quit"
        onSignal_(sig);
      }
    });
  }
  ~SignalThread() {
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
  }

 private:
  sigset_t set_;
  std::function<void(int)> onSignal_;
  std::thread thread_;
};

// /status as a person reads it.
std::string formatStatusReport(const nlohmann::json& d, const std::string& listen) {
  auto text = [](const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return std::string("-");
    if (it->is_string()) return it->get<std::string>().empty() ? std::string("-") : it->get<std::string>();
    return it->dump();
  };
  const nlohmann::json empty = nlohmann::json::object();
  const auto& agent = d.contains("agent") ? d["agent"] : empty;
  const auto& runtime = d.contains("runtime") ? d["runtime"] : empty;
  const auto& sensor = d.contains("sensor") ? d["sensor"] : empty;
  std::ostringstream out;
  const bool ready = d.value("ready", false);
  out << "qcs-agent " << text(agent, "version") << " (revision " << text(agent, "revision") << ") at " << listen << ": "
      << (ready ? "ready" : "NOT READY") << "\n";
  if (d.contains("platform") && d["platform"].is_object()) {
    const auto& platform = d["platform"];
    out << "  platform:   " << text(platform, "cloud") << ", " << text(platform, "orchestrator") << ", region "
        << text(platform, "region");
    if (text(platform, "cluster") != "-") out << ", ECS cluster " << text(platform, "cluster");
    out << "\n";
  }
  out << "  runtime:    " << text(runtime, "kind") << " " << text(runtime, "version") << " at "
      << text(runtime, "endpoint") << (runtime.value("up", false) ? " (up)" : " (UNREACHABLE)") << "\n";
  if (runtime.contains("eventStream") && runtime["eventStream"].is_object()) {
    const auto& stream = runtime["eventStream"];
    const std::string lastLoss = text(stream, "lastLoss");
    out << "  events:     " << (stream.value("connected", false) ? "connected" : "NOT CONNECTED (reconcile only)")
        << ", lost " << text(stream, "losses") << " times" << (lastLoss == "-" ? "" : ", last: " + lastLoss) << "\n";
  }
  std::string id = text(sensor, "containerId");
  out << "  sensor:     " << text(sensor, "state") << ", container " << (id == "-" ? id : id.substr(0, 12)) << "\n";
  out << "  image:      " << text(sensor, "image") << " (" << text(sensor, "imageId") << ")\n";
  std::string hash = text(sensor, "specHash");
  out << "  spec hash:  " << (hash == "-" ? hash : hash.substr(0, 12)) << "\n";
  out << "  restarts:  ";
  if (sensor.contains("restarts") && sensor["restarts"].is_object()) {
    for (const auto& [reason, count] : sensor["restarts"].items()) out << " " << reason << "=" << count.dump();
  }
  out << "\n";
  out << "  last exit:  " << text(sensor, "lastExitCode") << (sensor.value("lastExitOom", false) ? " (OOM-killed)" : "")
      << ", OOM kills " << text(sensor, "oomKills") << "\n";
  if (sensor.value("backoffSeconds", 0.0) > 0) out << "  backoff:    " << text(sensor, "backoffSeconds") << "s\n";
  if (sensor.contains("health") && sensor["health"].is_object() && sensor["health"].value("probes", false)) {
    const nlohmann::json& health = sensor["health"];
    const std::string result = text(health, "lastResult");
    out << "  health:     " << (result.empty() || result == "-" ? "not probed yet" : result) << ", "
        << text(health, "consecutiveFailures") << " failures in a row\n";
  }
  const std::string error = text(d, "lastError");
  if (error != "-") out << "  last error: " << error << "\n";
  return out.str();
}

// Where the node runs, and what that changes, in the agent's log.
void logPlatform(const platform::PlatformInfo& node) {
  auto text = [](const std::string& value) { return value.empty() ? std::string("unknown") : value; };
  std::string evidence;
  for (const auto& item : node.evidence) evidence += (evidence.empty() ? "" : "; ") + item;
  spdlog::info("platform: cloud {}, orchestrator {}, region {}, zone {}{} ({})", node.cloud, node.orchestrator,
               text(node.region), text(node.zone), node.cluster.empty() ? "" : ", ECS cluster " + node.cluster,
               evidence.empty() ? std::string("no evidence") : evidence);
  for (const auto& warning : node.warnings) spdlog::warn("platform: {}", warning);
  if (node.orchestrator == "ecs" && node.region.empty()) {
    spdlog::warn(
        "platform: on ECS but the region is unknown, so the sensor keeps Docker's default log driver instead of "
        "awslogs (set AWS_REGION in the agent's environment, or sensor.log_driver and sensor.log_options)");
  }
}

constexpr std::chrono::milliseconds kSensorStatsInterval{15000};
constexpr std::chrono::milliseconds kHeartbeatInterval{5000};
// Longer than the slowest bounded runtime call (60s plus a stop grace), so a slow daemon is not
// mistaken for a wedged agent.
constexpr std::chrono::milliseconds kLivenessTimeout{120000};

int commandRun(const Config& config) {
  auto redactor = std::make_shared<SecretRedactor>();
  // What the supervisor is doing, attached to every journal record (QCS_RUNTIME, ...).
  auto logContext = std::make_shared<LogContext>();
  if (auto st = setupLogging(config.logging.level, config.logging.format, redactor, logContext); !st)
    return configError(st.message());

  auto activation = makeSecretSource("secrets.activation_id", config.secrets.activationId,
                                     config.secrets.refreshInterval, config.platform.awsImdsEndpoint);
  if (!activation) return configError(activation.message());
  auto customer = makeSecretSource("secrets.customer_id", config.secrets.customerId, config.secrets.refreshInterval,
                                   config.platform.awsImdsEndpoint);
  if (!customer) return configError(customer.message());
  // The IDs must be readable before anything touches a container.
  if (auto secrets = readSensorSecrets(*activation.value(), *customer.value()); !secrets) {
    return configError(secrets.message());
  }
  auto registryAuth = makeRegistryAuth(config);
  if (!registryAuth) return configError(registryAuth.message());

  spdlog::info("qcs-agent {} ({}) starting; sensor {} from {}", agentVersion(), agentRevision(), config.sensor.name,
               config.sensor.image);
  const platform::PlatformInfo node = detectNodePlatform(config);
  logPlatform(node);
  SystemClock clock;
  SystemRandom random;
  Metrics metrics(agentVersion(), agentRevision());
  metrics.setPlatform(node);
  auto detecting = makeDetectingConnector(config);
  // Set on the supervisor's thread (its first connection), read after run() returned on the same one.
  std::optional<std::string> anotherAgent;
  Supervisor* running = nullptr;
  auto locking = makeLockingConnector(*detecting, config, [&](const std::string& why) {
    anotherAgent = why;
    if (running) running->requestStop();
  });
  auto connector = makeInstrumentingConnector(*locking, metrics, clock);
  auto specSource =
      makeConfigSpecSource(config, std::move(activation.value()), std::move(customer.value()), redactor, node);

  auto notifier = makeSystemdNotifier();
  const auto watchdog = watchdogInterval();

  SupervisorOptions options;
  options.sensorName = config.sensor.name;
  options.pullPolicy = config.sensor.pullPolicy;
  const auto& b = config.supervision.backoff;
  options.backoff = BackoffPolicy{b.initial, b.max, b.multiplier, b.jitter, b.resetAfter};
  options.reconcileInterval = config.supervision.reconcileInterval;
  options.stopSensorOnShutdown = config.supervision.onStop == "stop";
  options.stopTimeout = std::chrono::duration_cast<std::chrono::seconds>(config.supervision.stopTimeout);
  options.statsInterval = kSensorStatsInterval;
  const auto& health = config.supervision.health;
  options.health.execCommand = health.execCommand;
  options.health.quietAfter = health.quietAfter;
  options.health.startupGrace = health.startupGrace;
  options.health.period = health.period;
  options.health.timeout = health.timeout;
  options.health.failureThreshold = static_cast<int>(std::min<int64_t>(health.failureThreshold, 1'000'000));
  // The loop wakes at least every few seconds for /livez, and at half the watchdog interval for systemd.
  options.heartbeatInterval = kHeartbeatInterval;
  if (watchdog) {
    options.heartbeatInterval =
        std::min(options.heartbeatInterval, std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog / 2));
    spdlog::info("systemd watchdog on: pinging every {}ms from the supervisor loop", options.heartbeatInterval.count());
  }
  Supervisor supervisor(*connector, *specSource, *registryAuth.value(), clock, random, options);
  running = &supervisor;

  {
    // Signals are blocked before any other thread (the HTTP server's) starts, so they all inherit it.
    SignalThread signals([&](int sig) {
      spdlog::info("received {}; stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      supervisor.requestStop();
    });

    HttpServerOptions httpOptions;
    httpOptions.listen = config.http.listen;
    AgentEndpointOptions endpointOptions;
    endpointOptions.livenessTimeout = kLivenessTimeout;
    endpointOptions.platform = node;
    auto server = HttpServer::start(httpOptions, makeAgentRoutes([&supervisor] { return supervisor.status(); },
                                                                 &metrics, clock, endpointOptions, redactor));
    if (!server) {
      spdlog::error("agent.http: {}", server.message());
      return kExitFailure;
    }
    spdlog::info("agent.http: listening on {} (/metrics /livez /readyz /status)", server.value()->boundAddress());

    LoopNotifier loopNotifier(*notifier, watchdog.has_value());
    supervisor.setHeartbeat([&] {
      auto status = supervisor.status();
      logContext->set({status.runtimeKind, status.containerId, sensorStateName(status.state)});
      loopNotifier.onLoop(status);
    });
    supervisor.run();
    notifier->stopping();
    notifier->status("stopping");
  }
  if (anotherAgent) {
    // This agent never held a runtime connection, so shutdown has nothing to stop or leave.
    spdlog::error("{}", *anotherAgent);
    return kExitFailure;
  }
  supervisor.shutdown();
  spdlog::info("qcs-agent stopped");
  return kExitOk;
}

// Asks a running agent for /status and prints it for a person.
int commandStatus(const std::string& listen) {
  auto reply = httpGet(listen, "/status", std::chrono::seconds(5));
  if (!reply) {
    std::cerr << "qcs-agent status: no agent answered at " << listen << ": " << reply.message()
              << "\n(is qcs-agent running? `systemctl status qcs-agent`; is http.listen set elsewhere? use --listen)\n";
    return kExitFailure;
  }
  if (reply->status != 200) {
    std::cerr << "qcs-agent status: " << listen << " answered HTTP " << reply->status << ": " << reply->body << "\n";
    return kExitFailure;
  }
  auto document = nlohmann::json::parse(reply->body, nullptr, false);
  if (!document.is_object()) {
    std::cerr << "qcs-agent status: " << listen << " answered something that is not a qcs-agent status document\n";
    return kExitFailure;
  }
  std::cout << formatStatusReport(document, listen);
  return kExitOk;
}

int commandRender(const Config& config) {
  std::cout << "# qcs-agent " << agentVersion() << ": effective configuration\n" << renderConfigYaml(config);
  const platform::PlatformInfo node = detectNodePlatform(config);
  for (const auto& warning : node.warnings) std::cerr << "qcs-agent render: platform: " << warning << "\n";

  // The runtime decides the derived flags and the socket mount; detection only reads.
  auto detection = runtime::detectRuntime(detectOptions(config), runtime::defaultProbe());
  runtime::RuntimeInfo info;
  if (detection.chosen) {
    info.kind = detection.chosen->kind;
    info.endpoint = detection.chosen->path;
  } else {
    info.kind = config.runtime.kind == "containerd" ? "containerd" : "docker";
    std::cerr << "qcs-agent render: no runtime answered; rendering for " << info.kind << " without a socket mount\n"
              << runtime::describeDetection(detection) << "\n";
  }

  auto redactor = std::make_shared<SecretRedactor>();
  auto activation = makeSecretSource("secrets.activation_id", config.secrets.activationId,
                                     config.secrets.refreshInterval, config.platform.awsImdsEndpoint);
  auto customer = makeSecretSource("secrets.customer_id", config.secrets.customerId, config.secrets.refreshInterval,
                                   config.platform.awsImdsEndpoint);
  if (!activation) return configError(activation.message());
  if (!customer) return configError(customer.message());
  // Rendering works without readable secrets; the hash then covers placeholders and says so.
  bool secretsResolved = true;
  auto secrets = readSensorSecrets(*activation.value(), *customer.value());
  SensorSecrets values;
  if (secrets) {
    values = secrets.value();
  } else {
    secretsResolved = false;
    std::cerr << "qcs-agent render: " << secrets.message() << "\n";
  }
  SpecContext context;
  context.runtimeKind = info.kind;
  context.runtimeSocketHost = info.endpoint.empty() ? "" : stripHostRoot(config.runtime.hostRoot, info.endpoint);
  context.agentVersion = agentVersion();
  context.hostPathExists = [&](const std::string& p) { return hostPathExistsUnder(config.runtime.hostRoot, p); };
  context.platform = node;
  auto spec = buildSensorSpec(config, values, context);
  if (!spec) return configError(spec.message());
  nlohmann::json out = specToJson(spec.value(), /*redactSecrets=*/true);
  if (!secretsResolved) out["labels"][kLabelSpecHash] = "<unknown: secrets not readable>";
  std::cout << "---\n# platform: cloud " << node.cloud << ", orchestrator " << node.orchestrator
            << (node.region.empty() ? "" : ", region " + node.region)
            << (node.cluster.empty() ? "" : ", ECS cluster " + node.cluster) << "\n";
  std::cout << "# container spec for " << info.kind << (info.endpoint.empty() ? "" : " at " + info.endpoint)
            << " (secrets redacted)\n"
            << out.dump(2) << "\n";
  return kExitOk;
}

}  // namespace

int runMain(int argc, char** argv) {
  CLI::App app{"qcs-agent: runs and supervises the Qualys Container Security sensor on this node", "qcs-agent"};
  app.require_subcommand(0, 1);
  app.fallthrough();
  CommonOptions common;
  addCommonOptions(app, common);
  auto* run = app.add_subcommand("run", "Supervise the sensor (the default command)");
  auto* render = app.add_subcommand("render", "Print the effective configuration and the exact container spec");
  auto* version = app.add_subcommand("version", "Print the version and exit");
  auto* status = app.add_subcommand("status", "Ask a running agent (its http.listen address) how the sensor is doing");
  auto* check = app.add_subcommand("check", "Preflight: check this node can run the sensor; exit 0 only when all pass");
  std::string checkOutput = "text";
  check->add_option("-o,--output", checkOutput, "Report format: text | json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  for (auto* sub : {run, render, version, status, check}) sub->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  if (version->parsed()) {
    std::cout << "qcs-agent " << agentVersion() << " (revision " << agentRevision() << ")\n";
    return kExitOk;
  }

  try {
    std::vector<std::string> warnings;
    bool configExplicit = app.get_option("--config")->count() > 0;
    if (status->parsed() && !common.listen.empty()) return commandStatus(common.listen);
    auto config = loadFromOptions(common, configExplicit, warnings);
    if (!config && status->parsed() && !configExplicit) {
      // The default config may be unreadable to this user; the default address is still worth a try.
      return commandStatus(Config{}.http.listen);
    }
    if (!config) return configError(config.message());
    if (status->parsed()) return commandStatus(config->http.listen);
    for (const auto& w : warnings) std::cerr << "qcs-agent: warning: " << w << "\n";
    if (render->parsed()) return commandRender(config.value());
    if (check->parsed()) return commandCheck(config.value(), checkOutput);
    return commandRun(config.value());
  } catch (const std::exception& e) {
    std::cerr << "qcs-agent: fatal: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace qcs::agent
