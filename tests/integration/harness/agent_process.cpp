#include "harness/agent_process.h"

#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "agent/http_server.h"

namespace qcs::testing {

using nlohmann::json;
using namespace std::chrono_literals;

std::string e2eConfigYaml(const E2eConfig& config) {
  std::ostringstream c;
  c << config.runtime << "sensor:\n  image: " << config.image << "\n  pull_policy: " << config.pullPolicy
    << "\n  name: " << config.sensorName << "\n"
    << "  resources: {cpu_request: 100m, cpu_limit: 500m, memory_request: 16Mi, memory_limit: 64Mi}\n"
    << "  env: {STANDIN_LOG_INTERVAL: \"1\"}\n"
    << "  extra_mounts:\n  - {source: " << config.controlDir << ", target: /standin, read_only: true}\n"
    << config.extraSensor << "secrets:\n  activation_id: {source: env, name: QCS_E2E_ACTIVATION_ID}\n"
    << "  customer_id: {source: file, path: " << config.customerIdFile << "}\n"
    << "supervision:\n  backoff: {initial: 300ms, max: 3s, multiplier: 2, jitter: 0, reset_after: 1m}\n"
    << "  reconcile_interval: 5s\n"
    << config.extraSupervision << config.platform << "logging: {level: debug, format: json}\n"
    << "http: {listen: \"127.0.0.1:0\"}\n"  // tests run in parallel: let the kernel pick a port
    << config.extraTop;
  return c.str();
}

std::unique_ptr<Process> startAgentProcess(const TempDir& dir, const std::string& yaml, const std::string& name,
                                           const std::map<std::string, std::string>& env, int& counter) {
  const std::string path = dir.file(name + ".yaml");
  EXPECT_TRUE(writeFile(path, yaml, 0600));
  auto process = Process::spawn({QCS_AGENT_BINARY, "run", "--config", path}, env,
                                dir.file(name + "-" + std::to_string(++counter) + ".log"));
  EXPECT_TRUE(process.ok()) << (process.ok() ? "" : process.message());
  return process.ok() ? std::move(process.value()) : nullptr;
}

std::vector<std::string> agentMessages(Process& agent) {
  std::vector<std::string> out;
  std::istringstream in(agent.output());
  for (std::string line; std::getline(in, line);) {
    auto doc = json::parse(line, nullptr, false);
    if (doc.is_object() && doc.contains("msg") && doc["msg"].is_string()) out.push_back(doc["msg"].get<std::string>());
  }
  return out;
}

bool agentLogged(Process& agent, const std::string& needle) {
  for (const auto& message : agentMessages(agent)) {
    if (message.find(needle) != std::string::npos) return true;
  }
  return false;
}

json agentStatus(Process& agent) {
  static const std::regex listening(R"(agent\.http: listening on (127\.0\.0\.1:[0-9]+))");
  std::string address;
  for (const auto& message : agentMessages(agent)) {
    std::smatch match;
    if (std::regex_search(message, match, listening)) address = match[1];
  }
  if (address.empty()) return json();
  auto reply = agent::httpGet(address, "/status", 5s);
  if (!reply.ok() || reply->status != 200) return json();
  auto doc = json::parse(reply->body, nullptr, false);
  return doc.is_object() ? doc : json();
}

SensorView::SensorView(Process& agent) {
  json status = agentStatus(agent);
  if (status.is_object() && status["sensor"].is_object()) sensor = status["sensor"];
}

uint64_t SensorView::restarts(const std::string& reason) const {
  return sensor.is_object() && sensor["restarts"].is_object() ? sensor["restarts"].value(reason, uint64_t{0}) : 0;
}

std::string SensorView::state() const { return sensor.is_object() ? sensor.value("state", "") : ""; }

std::string SensorView::text(const std::string& key) const {
  if (!sensor.is_object() || !sensor.contains(key) || !sensor[key].is_string()) return "";
  return sensor[key].get<std::string>();
}

std::optional<int> SensorView::lastExitCode() const {
  if (!sensor.is_object() || !sensor["lastExitCode"].is_number()) return std::nullopt;
  return sensor["lastExitCode"].get<int>();
}

}  // namespace qcs::testing
