// The agent configured as on ECS: the sensor IDs come from Secrets Manager and the image from an
// "ECR" registry, with the instance role from IMDSv2 — all played by the loopback AWS emulator and
// a local registry that accepts the password the emulator's GetAuthorizationToken hands out.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "agent/http_server.h"
#include "harness/agent_process.h"
#include "harness/aws_emulator.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kSensorName = "qcs-ecs-e2e-sensor";
constexpr const char* kSecretId = "qcs/sensor-ids";
constexpr const char* kEcrPassword = "ecr-token-password-7f3a";

class AgentEcsE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    auto image = buildStandinImage(*dockerd_);
    ASSERT_TRUE(image.ok()) << image.message();
    registry_ = Registry::start("AWS", kEcrPassword);
    ASSERT_NE(registry_, nullptr);
    ASSERT_TRUE(registry_->push(*dockerd_, "qcs-standin:test", "qualys/qcs-sensor:ecs").ok());
    remote_ = registry_->address() + "/qualys/qcs-sensor:ecs";
    // The node starts without the image: the agent must pull it with the ECR token.
    ASSERT_TRUE(dockerd_->cli("rmi " + remote_).ok());

    AwsEmulator::Options options;
    options.region = "us-east-1";
    options.ecrPassword = kEcrPassword;
    emulator_ = AwsEmulator::start(options);
    ASSERT_NE(emulator_, nullptr);
    emulator_->putSecret(kSecretId, json{{"ACTIVATIONID", kE2eActivationId}, {"CUSTOMERID", kE2eCustomerId}}.dump());
  }

  void TearDown() override {
    agent_.reset();
    dockerd_.reset();
  }

  std::string config() {
    std::ostringstream c;
    auto secret = [&](const char* key) {
      return std::string("{source: aws-secretsmanager, secret_id: ") + kSecretId + ", json_key: " + key +
             ", region: us-east-1, endpoint: \"" + emulator_->endpoint() + "\"}";
    };
    c << "runtime:\n  kind: docker\n  endpoint: " << dockerd_->socketPath() << "\n"
      << "sensor:\n  image: " << remote_ << "\n  pull_policy: if-not-present\n  name: " << kSensorName << "\n"
      << "  resources: {cpu_request: 100m, cpu_limit: 500m, memory_request: 16Mi, memory_limit: 64Mi}\n"
      << "secrets:\n  activation_id: " << secret("ACTIVATIONID") << "\n  customer_id: " << secret("CUSTOMERID") << "\n"
      << "registry_auth:\n  kind: ecr\n"
      << "supervision:\n  backoff: {initial: 300ms, max: 3s, multiplier: 2, jitter: 0, reset_after: 1m}\n"
      << "  reconcile_interval: 1s\n"
      << "platform: {detect: none}\n"
      << "logging: {level: debug, format: json}\n"
      << "http: {listen: \"127.0.0.1:0\"}\n";
    return c.str();
  }

  // The environment of an agent on an ECS container instance, every endpoint on the emulator.
  std::map<std::string, std::string> ecsEnvironment() {
    return {{"AWS_EC2_METADATA_SERVICE_ENDPOINT", emulator_->endpoint()},
            {"AWS_EC2_METADATA_DISABLED", ""},
            {"AWS_ACCESS_KEY_ID", ""},
            {"AWS_SECRET_ACCESS_KEY", ""},
            {"AWS_SESSION_TOKEN", ""},
            {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""},
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI", ""},
            {"AWS_REGION", "us-east-1"},
            {"QCS_REGISTRY_AUTH_ECR_REGISTRY", registry_->address()},
            {"QCS_REGISTRY_AUTH_ECR_ENDPOINT", emulator_->endpoint()},
            {"QCS_SECRETS_REFRESH_INTERVAL", "2s"},
            {"DOCKER_HOST", ""}};
  }

  json inspect() {
    auto out = dockerd_->cli(std::string("inspect ") + kSensorName);
    if (!out.ok()) return json();
    auto doc = json::parse(out.value(), nullptr, false);
    return doc.is_array() && !doc.empty() ? doc[0] : json();
  }
  std::string sensorState() {
    auto c = inspect();
    return c.is_null() ? "" : c["State"]["Status"].get<std::string>();
  }
  std::string sensorEnv() {
    auto c = inspect();
    return c.is_null() ? "" : c["Config"]["Env"].dump();
  }
  std::string listenAddress() {
    static const std::regex listening(R"(agent\.http: listening on (127\.0\.0\.1:[0-9]+))");
    std::smatch match;
    std::string log = agent_->output();
    return std::regex_search(log, match, listening) ? match[1].str() : "";
  }

  TempDir dir_;
  std::unique_ptr<Dockerd> dockerd_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<AwsEmulator> emulator_;
  std::unique_ptr<Process> agent_;
  std::string remote_;
  int agents_ = 0;
};

TEST_F(AgentEcsE2ETest, IdsFromSecretsManagerImageFromEcrAndNoSecretAnywhereElse) {
  agent_ = startAgentProcess(dir_, config(), "agent", ecsEnvironment(), agents_);
  ASSERT_NE(agent_, nullptr);
  ASSERT_TRUE(waitFor([&] { return sensorState() == "running"; }, 90s)) << agent_->output();

  // The sensor holds the IDs; they came from the emulator, signed with the IMDS role's credentials.
  const std::string env = sensorEnv();
  EXPECT_NE(env.find(std::string("ACTIVATIONID=") + kE2eActivationId), std::string::npos);
  EXPECT_NE(env.find(std::string("CUSTOMERID=") + kE2eCustomerId), std::string::npos);
  EXPECT_EQ(inspect()["Config"]["Image"], remote_);
  EXPECT_GE(emulator_->calls("GetSecretValue"), 2);
  EXPECT_GE(emulator_->calls("GetAuthorizationToken"), 1);
  EXPECT_GE(emulator_->calls("imds-credentials"), 2);
  EXPECT_TRUE(emulator_->rejections().empty()) << emulator_->rejections().front();

  // Nowhere else: logs, /status, /metrics, labels, argv, render.
  const std::string address = listenAddress();
  ASSERT_FALSE(address.empty()) << agent_->output();
  auto status = agent::httpGet(address, "/status", 5s);
  auto metrics = agent::httpGet(address, "/metrics", 5s);
  ASSERT_TRUE(status.ok());
  ASSERT_TRUE(metrics.ok());
  auto render = runCommand({QCS_AGENT_BINARY, "render", "--config", dir_.file("agent.yaml")});
  ASSERT_TRUE(render.ok());
  const std::string cmdline = readFile("/proc/" + std::to_string(agent_->pid()) + "/cmdline");
  const std::string labels = inspect()["Config"]["Labels"].dump();
  for (const char* value : {kE2eActivationId, kE2eCustomerId, kEcrPassword}) {
    SCOPED_TRACE(value);
    EXPECT_EQ(agent_->output().find(value), std::string::npos);
    EXPECT_EQ(status->body.find(value), std::string::npos);
    EXPECT_EQ(metrics->body.find(value), std::string::npos);
    EXPECT_EQ(render->out.find(value), std::string::npos);
    EXPECT_EQ(render->err.find(value), std::string::npos);
    EXPECT_EQ(cmdline.find(value), std::string::npos);
    EXPECT_EQ(labels.find(value), std::string::npos);
  }
}

TEST_F(AgentEcsE2ETest, ARotatedSecretRecreatesTheSensor) {
  agent_ = startAgentProcess(dir_, config(), "agent", ecsEnvironment(), agents_);
  ASSERT_NE(agent_, nullptr);
  ASSERT_TRUE(waitFor([&] { return sensorState() == "running"; }, 90s)) << agent_->output();
  const std::string firstId = inspect()["Id"];

  const std::string rotated = "77777777-6666-4555-8444-333333333333";
  emulator_->putSecret(kSecretId, json{{"ACTIVATIONID", rotated}, {"CUSTOMERID", kE2eCustomerId}}.dump());
  ASSERT_TRUE(waitFor(
      [&] {
        auto c = inspect();
        return !c.is_null() && c["Id"] != firstId && c["State"]["Status"] == "running" &&
               c["Config"]["Env"].dump().find("ACTIVATIONID=" + rotated) != std::string::npos;
      },
      60s))
      << agent_->output();
  EXPECT_EQ(agent_->output().find(rotated), std::string::npos);
}

TEST_F(AgentEcsE2ETest, AccessDeniedStopsBeforeAnyContainer) {
  emulator_->denySecret(kSecretId);
  agent_ = startAgentProcess(dir_, config(), "agent", ecsEnvironment(), agents_);
  ASSERT_NE(agent_, nullptr);
  auto code = agent_->wait(60s);
  ASSERT_TRUE(code.has_value()) << agent_->output();
  EXPECT_EQ(*code, 78) << agent_->output();
  EXPECT_EQ(sensorState(), "");
  EXPECT_GE(emulator_->calls("GetSecretValue"), 1);
  EXPECT_EQ(emulator_->calls("GetAuthorizationToken"), 0) << "nothing is pulled without the IDs";
}

}  // namespace
}  // namespace qcs::testing
