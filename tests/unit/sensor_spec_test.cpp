#include "agent/sensor_spec.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

namespace qcs::agent {
namespace {

const SensorSecrets kSecrets{"11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"};

SpecContext dockerContext(std::set<std::string> existing = {"/var/lib/docker", "/etc/qualys"}) {
  SpecContext ctx;
  ctx.runtimeKind = "docker";
  ctx.runtimeSocketHost = "/var/run/docker.sock";
  ctx.agentVersion = "1.2.3";
  ctx.hostPathExists = [existing](const std::string& p) { return existing.count(p) > 0; };
  return ctx;
}

std::string envValue(const runtime::ContainerSpec& spec, const std::string& name) {
  for (const auto& e : spec.env) {
    if (e.name == name) return e.value;
  }
  return "<unset>";
}

TEST(SensorSpecTest, DefaultsFollowSpec) {
  Config config;
  auto spec = buildSensorSpec(config, kSecrets, dockerContext());
  ASSERT_TRUE(spec.ok()) << spec.message();
  EXPECT_EQ(spec->name, "qualys-container-sensor");
  EXPECT_EQ(spec->image, "qualys/qcs-sensor:latest");
  EXPECT_EQ(spec->args, (std::vector<std::string>{"--registry-sensor", "--perform-sca-scan", "--optimize-image-scans",
                                                  "--sensor-without-persistent-storage", "--enable-console-logs",
                                                  "--storage-driver-type", "overlay2"}));
  EXPECT_EQ(envValue(*spec, "ACTIVATIONID"), kSecrets.activationId);
  EXPECT_EQ(envValue(*spec, "CUSTOMERID"), kSecrets.customerId);
  EXPECT_EQ(envValue(*spec, "POD_URL"), "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor");
  EXPECT_EQ(envValue(*spec, "https_proxy"), "<unset>");
  EXPECT_EQ(spec->capAdd, (std::vector<std::string>{"SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"}));
  EXPECT_FALSE(spec->privileged);
  EXPECT_TRUE(spec->hostNetwork);
  EXPECT_EQ(spec->resources.cpuRequestMilli, 250);
  EXPECT_EQ(spec->resources.cpuLimitMilli, 500);
  EXPECT_EQ(spec->resources.memoryRequestBytes, 512LL << 20);
  EXPECT_EQ(spec->resources.memoryLimitBytes, 1LL << 30);
  ASSERT_EQ(spec->mounts.size(), 3u);
  EXPECT_EQ(spec->mounts[0].target, "/var/run/docker.sock");
  EXPECT_EQ(spec->mounts[1].source, "/var/lib/docker");
  EXPECT_TRUE(spec->mounts[1].readOnly);
  EXPECT_EQ(spec->mounts[2].target, "/usr/local/qualys/qpa/data/conf/agent-data");
  EXPECT_EQ(spec->labels.at(kLabelManaged), "true");
  EXPECT_EQ(spec->labels.at(kLabelVersion), "1.2.3");
  EXPECT_EQ(spec->labels.at(kLabelSpecHash).size(), 64u);
}

TEST(SensorSpecTest, ContainerdGetsItsDerivedFlagsAndSocketTarget) {
  Config config;
  auto ctx = dockerContext({});
  ctx.runtimeKind = "containerd";
  ctx.runtimeSocketHost = "/run/k3s/containerd/containerd.sock";
  auto spec = buildSensorSpec(config, kSecrets, ctx);
  ASSERT_TRUE(spec.ok());
  std::vector<std::string> tail(spec->args.end() - 4, spec->args.end());
  EXPECT_EQ(tail, (std::vector<std::string>{"--container-runtime", "containerd", "--storage-driver-type", "overlay"}));
  EXPECT_EQ(spec->mounts.at(0).source, "/run/k3s/containerd/containerd.sock");
  EXPECT_EQ(spec->mounts.at(0).target, "/run/containerd/containerd.sock");
}

TEST(SensorSpecTest, ModesMapToTheirFlags) {
  Config config;
  config.sensor.mode = "general";
  EXPECT_EQ(buildSensorSpec(config, kSecrets, dockerContext())->args.front(), "--perform-sca-scan");
  config.sensor.mode = "cicd";
  EXPECT_EQ(buildSensorSpec(config, kSecrets, dockerContext())->args.front(), "--cicd-deployed-sensor");
}

TEST(SensorSpecTest, OptionalMountsAndProxy) {
  Config config;
  config.sensor.args = {"--enable-console-logs"};
  config.sensor.storagePath = "/var/lib/qualys";
  config.sensor.proxy = {"http://proxy:3128", "http://proxy2:3128", "/etc/ssl/proxy.crt"};
  config.sensor.extraMounts = {{"/opt/extra", "/extra", true}};
  auto spec = buildSensorSpec(config, kSecrets, dockerContext({"/var/lib/qualys", "/etc/ssl/proxy.crt", "/opt/extra"}));
  ASSERT_TRUE(spec.ok()) << spec.message();
  EXPECT_EQ(envValue(*spec, "qualys_https_proxy"), "http://proxy:3128");
  EXPECT_EQ(envValue(*spec, "https_proxy"), "http://proxy2:3128");
  std::map<std::string, std::string> targets;
  for (const auto& m : spec->mounts) targets[m.target] = m.source;
  EXPECT_EQ(targets.at("/usr/local/qualys/qpa/data"), "/var/lib/qualys");
  EXPECT_EQ(targets.at("/etc/qualys/qpa/cert/custom-ca.crt"), "/etc/ssl/proxy.crt");
  EXPECT_EQ(targets.at("/extra"), "/opt/extra");
  EXPECT_EQ(targets.count("/var/lib/docker"), 0u) << "mounted only where the host path exists";
}

TEST(SensorSpecTest, AMissingConfiguredHostPathIsAnErrorNamingTheKey) {
  Config config;
  config.sensor.args = {"--enable-console-logs"};
  config.sensor.storagePath = "/nope";
  auto spec = buildSensorSpec(config, kSecrets, dockerContext());
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.message().find("sensor.storage_path"), std::string::npos);
}

TEST(SensorSpecTest, HashIsStableAndCoversWhatRuns) {
  Config config;
  auto a = buildSensorSpec(config, kSecrets, dockerContext());
  auto b = buildSensorSpec(config, kSecrets, dockerContext());
  EXPECT_EQ(a->labels.at(kLabelSpecHash), b->labels.at(kLabelSpecHash));

  auto ctx = dockerContext();
  ctx.agentVersion = "9.9.9";
  EXPECT_EQ(buildSensorSpec(config, kSecrets, ctx)->labels.at(kLabelSpecHash), a->labels.at(kLabelSpecHash))
      << "an agent upgrade alone does not re-create the sensor";

  SensorSecrets rotated = kSecrets;
  rotated.activationId = "99999999-2222-3333-4444-555555555555";
  EXPECT_NE(buildSensorSpec(config, rotated, dockerContext())->labels.at(kLabelSpecHash), a->labels.at(kLabelSpecHash));

  Config other = config;
  other.sensor.resources.memoryLimitBytes = 2LL << 30;
  EXPECT_NE(buildSensorSpec(other, kSecrets, dockerContext())->labels.at(kLabelSpecHash), a->labels.at(kLabelSpecHash));
  other = config;
  other.sensor.image = "qualys/qcs-sensor:1.2";
  EXPECT_NE(buildSensorSpec(other, kSecrets, dockerContext())->labels.at(kLabelSpecHash), a->labels.at(kLabelSpecHash));
}

TEST(SensorSpecTest, RedactedJsonHoldsNoSecretAndTheHashDoesNotRevealThem) {
  Config config;
  auto spec = buildSensorSpec(config, kSecrets, dockerContext());
  std::string text = specToJson(*spec, true).dump();
  EXPECT_EQ(text.find(kSecrets.activationId), std::string::npos);
  EXPECT_EQ(text.find(kSecrets.customerId), std::string::npos);
  EXPECT_NE(text.find("<redacted>"), std::string::npos);
  for (const auto& [k, v] : spec->labels) {
    EXPECT_EQ(v.find(kSecrets.activationId), std::string::npos) << k;
  }
  for (const auto& arg : spec->args) EXPECT_EQ(arg.find(kSecrets.customerId), std::string::npos);
}

}  // namespace
// ---- The sensor's log driver (Docker) ------------------------------------------------------------

SpecContext ecsContext(const std::string& region = "eu-west-1", const std::string& cluster = "prod") {
  SpecContext ctx = dockerContext();
  ctx.platform.cloud = "aws";
  ctx.platform.orchestrator = "ecs";
  ctx.platform.region = region;
  ctx.platform.cluster = cluster;
  return ctx;
}

TEST(SensorLogConfigTest, AutoOnEcsIsAwslogsToTheClustersGroupInTheNodesRegion) {
  Config config;
  auto spec = buildSensorSpec(config, kSecrets, ecsContext());
  ASSERT_TRUE(spec.ok()) << spec.message();
  EXPECT_EQ(spec->log.driver, "awslogs");
  EXPECT_EQ(spec->log.options.at("awslogs-group"), "/ecs/prod/qualys-container-sensor");
  EXPECT_EQ(spec->log.options.at("awslogs-region"), "eu-west-1");
  EXPECT_EQ(spec->log.options.at("awslogs-create-group"), "true");
  EXPECT_EQ(spec->log.options.at("mode"), "non-blocking") << "CloudWatch must never block the sensor";
}

TEST(SensorLogConfigTest, AutoOffEcsOrWithoutARegionLeavesDockersDefault) {
  Config config;
  SpecContext eks = dockerContext();
  eks.platform.cloud = "aws";
  eks.platform.orchestrator = "eks";
  eks.platform.region = "us-east-1";
  for (const SpecContext& ctx : {dockerContext(), eks, ecsContext("")}) {
    auto log = sensorLogConfig(config.sensor, ctx);
    EXPECT_TRUE(log.driver.empty()) << ctx.platform.orchestrator << " " << ctx.platform.region;
    EXPECT_TRUE(log.options.empty());
  }
}

TEST(SensorLogConfigTest, AnEcsClusterWithoutANameIsTheDefaultCluster) {
  EXPECT_EQ(ecsSensorLogGroup(""), "/ecs/default/qualys-container-sensor");
  EXPECT_EQ(sensorLogConfig(Config{}.sensor, ecsContext("us-east-2", "")).options.at("awslogs-group"),
            "/ecs/default/qualys-container-sensor");
}

TEST(SensorLogConfigTest, OptionsAddToAndOverrideWhatAutoDerives) {
  Config config;
  config.sensor.logOptions = {{"awslogs-endpoint", "http://127.0.0.1:4566"}, {"mode", "blocking"}};
  auto log = sensorLogConfig(config.sensor, ecsContext());
  EXPECT_EQ(log.driver, "awslogs");
  EXPECT_EQ(log.options.at("awslogs-endpoint"), "http://127.0.0.1:4566");
  EXPECT_EQ(log.options.at("mode"), "blocking");
  EXPECT_EQ(log.options.at("awslogs-region"), "eu-west-1");
}

TEST(SensorLogConfigTest, AnExplicitDriverIsUsedAsGivenAndDefaultNeverSetsOne) {
  Config config;
  config.sensor.logDriver = "local";
  config.sensor.logOptions = {{"max-size", "10m"}};
  auto log = sensorLogConfig(config.sensor, ecsContext());
  EXPECT_EQ(log.driver, "local");
  EXPECT_EQ(log.options, (std::map<std::string, std::string>{{"max-size", "10m"}}));

  config.sensor.logDriver = "default";
  config.sensor.logOptions.clear();
  log = sensorLogConfig(config.sensor, ecsContext());
  EXPECT_TRUE(log.driver.empty());
  EXPECT_TRUE(log.options.empty());
}

TEST(SensorLogConfigTest, ContainerdNeverGetsADockerLogDriver) {
  Config config;
  config.sensor.logDriver = "awslogs";
  SpecContext ctx = ecsContext();
  ctx.runtimeKind = "containerd";
  auto log = sensorLogConfig(config.sensor, ctx);
  EXPECT_TRUE(log.driver.empty());
  EXPECT_TRUE(log.options.empty());
}

TEST(SensorLogConfigTest, TheLogDriverIsPartOfTheSpecHash) {
  Config config;
  auto plain = buildSensorSpec(config, kSecrets, dockerContext());
  auto onEcs = buildSensorSpec(config, kSecrets, ecsContext());
  auto otherRegion = buildSensorSpec(config, kSecrets, ecsContext("us-west-2"));
  ASSERT_TRUE(plain.ok() && onEcs.ok() && otherRegion.ok());
  EXPECT_NE(plain->labels.at(kLabelSpecHash), onEcs->labels.at(kLabelSpecHash));
  EXPECT_NE(onEcs->labels.at(kLabelSpecHash), otherRegion->labels.at(kLabelSpecHash));
}

}  // namespace qcs::agent
