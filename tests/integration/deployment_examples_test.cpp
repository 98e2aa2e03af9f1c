// The configuration of each of the four deployments, exactly as the repository ships it, run by the
// real agent against loopback emulators of the cloud it is written for:
//   - ECS: the agent.yaml that deploy/ecs/cloud-init.yaml writes (Docker; IDs from Secrets
//     Manager; image from ECR; the sensor's logs to CloudWatch through dockerd's awslogs driver);
//   - EKS, AKS, GKE: deploy/kubernetes/overlays/<name>/agent.yaml (containerd found under
//     host_root; IDs from the Secret volume's files; image from ECR, ACR or Artifact Registry).
// Only "where" is changed, through the environment (QCS_* keys and the standard variables): the
// runtime socket, host_root, the image's registry, the emulators' endpoints, the secret files and
// the listen address. "What" (runtime kind, secret sources, registry auth kind, platform.detect) is
// the shipped file's. The node's identity is a fake root with the cloud's DMI files.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "agent/http_server.h"
#include "common/encoding.h"
#include "harness/agent_process.h"
#include "harness/aws_emulator.h"
#include "harness/cloud_metadata_emulator.h"
#include "harness/cloudwatch_logs_emulator.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kSensorName = "qualys-container-sensor";  // the shipped files keep the default
constexpr const char* kSecretId = "qualys/container-sensor";    // as deploy/ecs/cloud-init.yaml names it

std::string sourceFile(const std::string& relative) { return readFile(std::string(QCS_SOURCE_DIR) + "/" + relative); }

// The agent.yaml that cloud-init writes on an ECS container instance.
std::string ecsAgentYaml() {
  YAML::Node cloudInit = YAML::Load(sourceFile("deploy/ecs/cloud-init.yaml"));
  for (const auto& file : cloudInit["write_files"]) {
    if (file["path"].as<std::string>() == "/etc/qcs-agent/agent.yaml") return file["content"].as<std::string>();
  }
  return "";
}

std::string uniqueNamespace() {
  std::random_device random;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", random());
  return std::string("qcs-deploy-") + suffix;
}

// A short JWT (alg none) whose exp is `lifetime` away: what the ACR provider reads to cache it, and
// short enough for htpasswd's bcrypt (72 bytes).
std::string shortJwt(std::chrono::seconds lifetime) {
  const auto exp =
      std::chrono::duration_cast<std::chrono::seconds>((std::chrono::system_clock::now() + lifetime).time_since_epoch())
          .count();
  return base64UrlEncode(R"({"alg":"none"})") + "." + base64UrlEncode("{\"exp\":" + std::to_string(exp) + "}") + ".e2e";
}

class DeploymentExampleTest : public ::testing::Test {
 protected:
  void TearDown() override {
    agent_.reset();
    containerd_.reset();
    dockerd_.reset();
    registry_.reset();
  }

  // A node's root as the agent sees it under host_root: the cloud's DMI identity.
  void makeNodeRoot(const std::map<std::string, std::string>& dmi) {
    fs::create_directories(root() + "/sys/class/dmi/id");
    for (const auto& [name, value] : dmi) ASSERT_TRUE(writeFile(root() + "/sys/class/dmi/id/" + name, value + "\n"));
  }
  // Makes hostPath visible under the fake root, where the agent looks for it.
  void showUnderRoot(const std::string& hostPath) {
    const fs::path link = root() + hostPath;
    fs::create_directories(link.parent_path());
    fs::create_symlink(hostPath, link);
  }
  std::string root() const { return dir_.file("node"); }

  // The stand-in, pushed to the registry as the shipped file's repository and tag.
  void pushSensorImage(const std::string& user, const std::string& password, const std::string& repoTag) {
    registry_ = Registry::start(user, password);
    ASSERT_NE(registry_, nullptr);
    ASSERT_TRUE(registry_->push(*dockerd_, "qcs-standin:test", repoTag).ok());
    image_ = registry_->address() + "/" + repoTag;
    // The node starts without it: the agent must pull it with the cloud's credentials.
    ASSERT_TRUE(dockerd_->cli("rmi " + image_).ok());
  }

  void writeSecretFiles() {
    ASSERT_TRUE(writeFile(dir_.file("activation-id"), std::string(kE2eActivationId) + "\n", 0600));
    ASSERT_TRUE(writeFile(dir_.file("customer-id"), std::string(kE2eCustomerId) + "\n", 0600));
  }

  // The environment every deployment's agent gets: nothing of this machine's leaks in, and no
  // request can leave the loopback range.
  std::map<std::string, std::string> baseEnvironment() {
    return {{"DOCKER_HOST", ""},
            {"AWS_ACCESS_KEY_ID", ""},
            {"AWS_SECRET_ACCESS_KEY", ""},
            {"AWS_SESSION_TOKEN", ""},
            {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""},
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI", ""},
            {"AWS_REGION", ""},
            {"AWS_DEFAULT_REGION", ""},
            {"AWS_EC2_METADATA_DISABLED", "true"},
            {"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"},
            {"GCE_METADATA_HOST", "127.0.0.1:9"},
            {"QCS_AZURE_IMDS_ENDPOINT", "http://127.0.0.1:9"},
            {"ECS_CONTAINER_METADATA_URI_V4", ""},
            {"ECS_CONTAINER_METADATA_URI", ""},
            {"AWS_EXECUTION_ENV", ""},
            {"KUBERNETES_SERVICE_HOST", ""},
            {"QCS_RUNTIME_HOST_ROOT", root()},
            {"QCS_SENSOR_IMAGE", image_},
            {"QCS_HTTP_LISTEN", "127.0.0.1:0"},
            {"QCS_LOGGING_LEVEL", "debug"}};
  }
  // A Kubernetes node: containerd at its usual path under host_root, the IDs in Secret-volume files.
  std::map<std::string, std::string> kubernetesEnvironment() {
    auto env = baseEnvironment();
    env["KUBERNETES_SERVICE_HOST"] = "10.100.0.1";  // set in every pod; never contacted
    env["QCS_RUNTIME_ENDPOINT"] = containerd_->socketPath();
    env["QCS_RUNTIME_CONTAINERD_NAMESPACE"] = ns_;
    env["QCS_RUNTIME_CONTAINERD_LOG_DIR"] = dir_.file("sensor-logs");
    env["QCS_SECRETS_ACTIVATION_ID_PATH"] = dir_.file("activation-id");
    env["QCS_SECRETS_CUSTOMER_ID_PATH"] = dir_.file("customer-id");
    return env;
  }

  void startKubernetesNode(const std::map<std::string, std::string>& dmi) {
    dockerd_ = Dockerd::start();  // only to push the image to the registry
    ASSERT_NE(dockerd_, nullptr);
    ASSERT_TRUE(buildStandinImage(*dockerd_).ok());
    containerd_ = Containerd::start();
    ASSERT_NE(containerd_, nullptr);
    ns_ = uniqueNamespace();
    makeNodeRoot(dmi);
    showUnderRoot(containerd_->socketPath());
    fs::create_directories(dir_.file("sensor-logs"));
    showUnderRoot(dir_.file("sensor-logs"));
    writeSecretFiles();
  }

  void startAgent(const std::string& yaml, const std::map<std::string, std::string>& env) {
    agent_ = startAgentProcess(dir_, yaml, "agent", env, agents_);
    ASSERT_NE(agent_, nullptr);
  }

  std::string listenAddress() {
    static const std::regex listening(R"(agent\.http: listening on (127\.0\.0\.1:[0-9]+))");
    for (const auto& message : agentMessages(*agent_)) {
      std::smatch match;
      if (std::regex_search(message, match, listening)) return match[1];
    }
    return "";
  }
  json status() { return agentStatus(*agent_); }
  bool sensorRunning() {
    json s = status();
    return s.is_object() && s["sensor"]["state"] == "running";
  }
  std::string metrics() {
    auto reply = agent::httpGet(listenAddress(), "/metrics", 5s);
    return reply.ok() ? reply->body : "";
  }

  // The sensor's environment as the runtime holds it.
  std::string sensorEnvironment() {
    if (containerd_) {
      auto info = containerd_->cli("-n " + ns_ + " containers info " + kSensorName);
      if (!info.ok()) return "";
      auto doc = json::parse(*info, nullptr, false);
      return doc.is_object() ? doc["Spec"]["process"]["env"].dump() : "";
    }
    auto out = dockerd_->cli(std::string("inspect ") + kSensorName);
    if (!out.ok()) return "";
    auto doc = json::parse(*out, nullptr, false);
    return doc.is_array() && !doc.empty() ? doc[0]["Config"]["Env"].dump() : "";
  }

  // What every deployment promises once the sensor runs.
  void expectRunningWithTheIdsAndNothingLeaked(const std::string& cloud, const std::string& orchestrator,
                                               const std::string& region) {
    const std::string env = sensorEnvironment();
    EXPECT_NE(env.find(std::string("ACTIVATIONID=") + kE2eActivationId), std::string::npos) << env;
    EXPECT_NE(env.find(std::string("CUSTOMERID=") + kE2eCustomerId), std::string::npos);

    const json s = status();
    EXPECT_EQ(s["sensor"]["image"], image_);
    EXPECT_EQ(s["platform"]["cloud"], cloud) << s.dump(2);
    EXPECT_EQ(s["platform"]["orchestrator"], orchestrator);
    EXPECT_EQ(s["platform"]["region"], region);
    EXPECT_TRUE(s["platform"]["warnings"].empty()) << s["platform"].dump(2);

    const std::string text = metrics();
    const std::regex info("qcs_agent_info\\{cloud=\"" + cloud + "\",[^}]*orchestrator=\"" + orchestrator +
                          "\",region=\"" + region + "\"[^}]*\\} 1");
    EXPECT_TRUE(std::regex_search(text, info)) << text.substr(0, 2000);

    const std::string log = agent_->output();
    for (const std::string& where : {log, s.dump(), text}) {
      EXPECT_EQ(where.find(kE2eActivationId), std::string::npos);
      EXPECT_EQ(where.find(kE2eCustomerId), std::string::npos);
    }
  }

  TempDir dir_;
  std::unique_ptr<Dockerd> dockerd_;
  std::unique_ptr<Containerd> containerd_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<Process> agent_;
  std::string image_;
  std::string ns_;
  int agents_ = 0;
};

// ECS: deploy/ecs/cloud-init.yaml's agent.yaml on an EC2 container instance of cluster "prod".
TEST_F(DeploymentExampleTest, EcsCloudInitConfiguration) {
  const std::string shipped = ecsAgentYaml();
  ASSERT_FALSE(shipped.empty()) << "deploy/ecs/cloud-init.yaml writes no /etc/qcs-agent/agent.yaml";

  CloudWatchLogsEmulator::Options logsOptions;
  logsOptions.region = "us-east-1";
  auto logs = CloudWatchLogsEmulator::start(logsOptions);
  ASSERT_NE(logs, nullptr);
  // dockerd ships the sensor's logs with its own credentials (the instance role on a real node).
  dockerd_ = Dockerd::start({{"AWS_ACCESS_KEY_ID", logsOptions.accessKeyId},
                             {"AWS_SECRET_ACCESS_KEY", logsOptions.secretAccessKey},
                             {"AWS_EC2_METADATA_DISABLED", "true"},
                             {"AWS_SHARED_CREDENTIALS_FILE", dir_.file("no-aws-credentials")},
                             {"AWS_CONFIG_FILE", dir_.file("no-aws-config")}});
  ASSERT_NE(dockerd_, nullptr);
  ASSERT_TRUE(buildStandinImage(*dockerd_).ok());
  AwsEmulator::Options awsOptions;
  awsOptions.region = "us-east-1";
  awsOptions.ecrPassword = "ecr-token-for-the-deploy-test";
  auto aws = AwsEmulator::start(awsOptions);
  ASSERT_NE(aws, nullptr);
  aws->putSecret(kSecretId, json{{"ACTIVATIONID", kE2eActivationId}, {"CUSTOMERID", kE2eCustomerId}}.dump());
  ASSERT_NO_FATAL_FAILURE(pushSensorImage("AWS", awsOptions.ecrPassword, "qualys/qcs-sensor:1.2.3"));

  ASSERT_NO_FATAL_FAILURE(makeNodeRoot({{"sys_vendor", "Amazon EC2"}, {"board_vendor", "Amazon EC2"}}));
  fs::create_directories(root() + "/etc/ecs");
  ASSERT_TRUE(writeFile(root() + "/etc/ecs/ecs.config", "ECS_CLUSTER=prod\nECS_ENABLE_TASK_IAM_ROLE=true\n"));
  showUnderRoot(dockerd_->socketPath());

  // The awslogs driver's endpoint is "where" too; it is a log option, so it goes into the file.
  YAML::Node config = YAML::Load(shipped);
  config["sensor"]["log_options"]["awslogs-endpoint"] = logs->endpoint();
  config["sensor"]["log_options"]["awslogs-force-flush-interval-seconds"] = "1";
  YAML::Emitter out;
  out << config;

  auto env = baseEnvironment();
  env["AWS_EC2_METADATA_DISABLED"] = "";
  env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = aws->endpoint();  // the instance role and the region
  env["QCS_RUNTIME_ENDPOINT"] = dockerd_->socketPath();
  env["QCS_SECRETS_ACTIVATION_ID_ENDPOINT"] = aws->endpoint();
  env["QCS_SECRETS_CUSTOMER_ID_ENDPOINT"] = aws->endpoint();
  env["QCS_REGISTRY_AUTH_ECR_REGISTRY"] = registry_->address();
  env["QCS_REGISTRY_AUTH_ECR_ENDPOINT"] = aws->endpoint();
  env["QCS_REGISTRY_AUTH_ECR_REGION"] = "us-east-1";
  startAgent(out.c_str(), env);

  ASSERT_TRUE(waitFor([&] { return sensorRunning(); }, 120s)) << agent_->output();
  expectRunningWithTheIdsAndNothingLeaked("aws", "ecs", "us-east-1");
  EXPECT_EQ(status()["platform"]["cluster"], "prod");
  EXPECT_GE(aws->calls("GetSecretValue"), 2);
  EXPECT_GE(aws->calls("GetAuthorizationToken"), 1);
  EXPECT_TRUE(aws->rejections().empty()) << aws->rejections().front();

  // The sensor logs to CloudWatch: group /ecs/<cluster>/qualys-container-sensor in the node's region.
  auto inspect = dockerd_->cli(std::string("inspect --format '{{json .HostConfig.LogConfig}}' ") + kSensorName);
  ASSERT_TRUE(inspect.ok()) << inspect.message();
  const json logConfig = json::parse(*inspect);
  EXPECT_EQ(logConfig["Type"], "awslogs");
  EXPECT_EQ(logConfig["Config"]["awslogs-group"], "/ecs/prod/qualys-container-sensor");
  EXPECT_EQ(logConfig["Config"]["awslogs-region"], "us-east-1");
  const std::string group = "/ecs/prod/qualys-container-sensor";
  ASSERT_TRUE(waitFor(
      [&] {
        for (const auto& stream : logs->streams(group)) {
          for (const auto& line : logs->events(group, stream)) {
            if (line.find("standin: args: --registry-sensor") != std::string::npos) return true;
          }
        }
        return false;
      },
      60s))
      << "no sensor output reached CloudWatch; groups: " << logs->groups().size();
  for (const auto& stream : logs->streams(group)) {
    for (const auto& line : logs->events(group, stream)) {
      EXPECT_EQ(line.find(kE2eActivationId), std::string::npos) << "the stand-in prints names, never values";
    }
  }
}

// EKS: deploy/kubernetes/overlays/eks/agent.yaml on an EC2 node; ECR with the node's instance role.
TEST_F(DeploymentExampleTest, EksOverlayConfiguration) {
  const std::string shipped = sourceFile("deploy/kubernetes/overlays/eks/agent.yaml");
  ASSERT_FALSE(shipped.empty());
  ASSERT_NO_FATAL_FAILURE(startKubernetesNode({{"sys_vendor", "Amazon EC2"}, {"bios_vendor", "Amazon EC2"}}));
  AwsEmulator::Options awsOptions;
  awsOptions.region = "eu-west-1";
  awsOptions.ecrPassword = "ecr-token-for-the-eks-test";
  auto aws = AwsEmulator::start(awsOptions);
  ASSERT_NE(aws, nullptr);
  ASSERT_NO_FATAL_FAILURE(pushSensorImage("AWS", awsOptions.ecrPassword, "qualys/qcs-sensor:latest"));

  auto env = kubernetesEnvironment();
  env["AWS_EC2_METADATA_DISABLED"] = "";
  env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = aws->endpoint();
  env["QCS_REGISTRY_AUTH_ECR_REGISTRY"] = registry_->address();
  env["QCS_REGISTRY_AUTH_ECR_ENDPOINT"] = aws->endpoint();
  env["QCS_REGISTRY_AUTH_ECR_REGION"] = "eu-west-1";
  startAgent(shipped, env);

  ASSERT_TRUE(waitFor([&] { return sensorRunning(); }, 120s)) << agent_->output();
  expectRunningWithTheIdsAndNothingLeaked("aws", "eks", "eu-west-1");
  EXPECT_EQ(status()["runtime"]["kind"], "containerd");
  EXPECT_GE(aws->calls("GetAuthorizationToken"), 1);
  EXPECT_TRUE(aws->rejections().empty()) << aws->rejections().front();
}

// AKS: deploy/kubernetes/overlays/aks/agent.yaml on an Azure node; ACR with the kubelet identity.
TEST_F(DeploymentExampleTest, AksOverlayConfiguration) {
  const std::string shipped = sourceFile("deploy/kubernetes/overlays/aks/agent.yaml");
  ASSERT_FALSE(shipped.empty());
  ASSERT_NO_FATAL_FAILURE(startKubernetesNode({{"sys_vendor", "Microsoft Corporation"},
                                               {"product_name", "Virtual Machine"},
                                               {"chassis_asset_tag", "7783-7084-3265-9085-8269-3286-77"}}));
  const std::string refreshToken = shortJwt(3h);
  ASSERT_NO_FATAL_FAILURE(
      pushSensorImage("00000000-0000-0000-0000-000000000000", refreshToken, "qualys/qcs-sensor:latest"));
  CloudMetadataEmulator::Options options;
  options.acrService = registry_->address();
  options.fixedAcrRefreshToken = refreshToken;
  options.azureLocation = "westeurope";
  auto azure = CloudMetadataEmulator::start(options);
  ASSERT_NE(azure, nullptr);

  auto env = kubernetesEnvironment();
  env["QCS_PLATFORM_AZURE_IMDS_ENDPOINT"] = azure->endpoint();
  env["QCS_REGISTRY_AUTH_ACR_EXCHANGE_ENDPOINT"] = azure->endpoint();
  startAgent(shipped, env);

  ASSERT_TRUE(waitFor([&] { return sensorRunning(); }, 120s)) << agent_->output();
  expectRunningWithTheIdsAndNothingLeaked("azure", "aks", "westeurope");
  EXPECT_GE(azure->calls("azure-imds"), 1);
  EXPECT_GE(azure->calls("acr-exchange"), 1);
  EXPECT_GE(azure->calls("azure-compute"), 1);
  EXPECT_TRUE(azure->acceptsAcrRefreshToken(refreshToken));
  EXPECT_TRUE(azure->rejections().empty()) << azure->rejections().front();
  EXPECT_EQ(agent_->output().find(refreshToken), std::string::npos) << "the registry token is a secret too";
}

// GKE: deploy/kubernetes/overlays/gke/agent.yaml on a GCE node; Artifact Registry with the node's
// service account.
TEST_F(DeploymentExampleTest, GkeOverlayConfiguration) {
  const std::string shipped = sourceFile("deploy/kubernetes/overlays/gke/agent.yaml");
  ASSERT_FALSE(shipped.empty());
  ASSERT_NO_FATAL_FAILURE(startKubernetesNode(
      {{"sys_vendor", "Google"}, {"product_name", "Google Compute Engine"}, {"bios_vendor", "Google"}}));
  const std::string accessToken = "ya29.qcs-deploy-test-" + sha256Hex(dir_.path()).substr(0, 24);
  ASSERT_NO_FATAL_FAILURE(pushSensorImage("oauth2accesstoken", accessToken, "qualys/qcs-sensor:latest"));
  CloudMetadataEmulator::Options options;
  options.fixedGcpAccessToken = accessToken;
  options.gcpZone = "europe-west1-b";
  auto gcp = CloudMetadataEmulator::start(options);
  ASSERT_NE(gcp, nullptr);

  auto env = kubernetesEnvironment();
  env["QCS_PLATFORM_GCP_METADATA_HOST"] = gcp->hostAndPort();
  startAgent(shipped, env);

  ASSERT_TRUE(waitFor([&] { return sensorRunning(); }, 120s)) << agent_->output();
  expectRunningWithTheIdsAndNothingLeaked("gcp", "gke", "europe-west1");
  EXPECT_EQ(status()["platform"]["zone"], "europe-west1-b");
  EXPECT_GE(gcp->calls("gcp-token"), 1);
  EXPECT_GE(gcp->calls("gcp-zone"), 1);
  EXPECT_TRUE(gcp->acceptsGcpToken(accessToken));
  EXPECT_TRUE(gcp->rejections().empty()) << gcp->rejections().front();
  EXPECT_EQ(agent_->output().find(accessToken), std::string::npos) << "the registry token is a secret too";
}

}  // namespace
}  // namespace qcs::testing
