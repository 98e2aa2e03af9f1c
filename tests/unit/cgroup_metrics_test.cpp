#include "runtime/containerd/cgroup_metrics.h"

#include <google/protobuf/any.pb.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace qcs::runtime::containerd {
namespace {

namespace pb = google::protobuf;

constexpr int64_t kMiB = 1024 * 1024;
constexpr const char* kUrlPrefix = "types.googleapis.com/";

// The generated cgroups classes are linked into this binary with qcs::runtime, but their headers
// are private to it; the generated pool and factory hand out those same classes by name.
std::unique_ptr<pb::Message> newGenerated(const std::string& type) {
  const pb::Descriptor* descriptor = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(type);
  if (descriptor == nullptr) return nullptr;
  return std::unique_ptr<pb::Message>(pb::MessageFactory::generated_factory()->GetPrototype(descriptor)->New());
}

// A Tasks.Metrics payload of `type` built from text format, under `urlPrefix` + type.
pb::Any metric(const std::string& type, const std::string& text, const std::string& urlPrefix) {
  auto message = newGenerated(type);
  EXPECT_NE(message, nullptr) << type << " is not linked in";
  pb::Any any;
  if (message == nullptr) return any;
  EXPECT_TRUE(pb::TextFormat::ParseFromString(text, message.get())) << text;
  any.set_type_url(urlPrefix + type);
  any.set_value(message->SerializeAsString());
  return any;
}

class CgroupMetricsUrlTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CgroupMetricsUrlTest, V1UsesTotalCpuAndUsageMinusTotalInactiveFile) {
  // inactive_file (this cgroup alone) differs from total_inactive_file (with descendants), as on
  // a real host; docker and the kubelet subtract the hierarchical one.
  const auto any = metric(kCgroupV1MetricsType,
                          "cpu { usage { total: 2500000000 kernel: 1000000000 user: 1500000000 } }"
                          "memory { usage { usage: 314572800 limit: 1073741824 } inactive_file: 1048576 "
                          "total_inactive_file: 104857600 cache: 209715200 }",
                          GetParam());
  auto stats = statsFromMetric(any);
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_DOUBLE_EQ(stats->cpuSeconds, 2.5);
  EXPECT_EQ(stats->memoryBytes, 200 * kMiB);
}

TEST_P(CgroupMetricsUrlTest, V2UsesUsageUsecAndUsageMinusInactiveFile) {
  const auto any = metric(kCgroupV2MetricsType,
                          "cpu { usage_usec: 1500000 user_usec: 1000000 system_usec: 500000 }"
                          "memory { usage: 52428800 inactive_file: 10485760 active_file: 4194304 file: 14680064 }",
                          GetParam());
  auto stats = statsFromMetric(any);
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_DOUBLE_EQ(stats->cpuSeconds, 1.5);
  EXPECT_EQ(stats->memoryBytes, 40 * kMiB);
}

TEST_P(CgroupMetricsUrlTest, WorkingSetIsClampedAtZero) {
  auto v1 = statsFromMetric(
      metric(kCgroupV1MetricsType, "memory { usage { usage: 1000 } total_inactive_file: 5000 }", GetParam()));
  ASSERT_TRUE(v1.ok()) << v1.message();
  EXPECT_EQ(v1->memoryBytes, 0);
  auto v2 = statsFromMetric(metric(kCgroupV2MetricsType, "memory { usage: 1000 inactive_file: 1001 }", GetParam()));
  ASSERT_TRUE(v2.ok()) << v2.message();
  EXPECT_EQ(v2->memoryBytes, 0);
}

TEST_P(CgroupMetricsUrlTest, InactiveFileEqualToUsageIsZero) {
  auto v2 = statsFromMetric(metric(kCgroupV2MetricsType, "memory { usage: 4096 inactive_file: 4096 }", GetParam()));
  ASSERT_TRUE(v2.ok()) << v2.message();
  EXPECT_EQ(v2->memoryBytes, 0);
}

TEST_P(CgroupMetricsUrlTest, MissingSectionsCountAsZero) {
  auto v1 = statsFromMetric(metric(kCgroupV1MetricsType, "pids { current: 3 }", GetParam()));
  ASSERT_TRUE(v1.ok()) << v1.message();
  EXPECT_EQ(v1->cpuSeconds, 0);
  EXPECT_EQ(v1->memoryBytes, 0);
  auto v2 = statsFromMetric(metric(kCgroupV2MetricsType, "cpu { usage_usec: 250000 }", GetParam()));
  ASSERT_TRUE(v2.ok()) << v2.message();
  EXPECT_DOUBLE_EQ(v2->cpuSeconds, 0.25);
  EXPECT_EQ(v2->memoryBytes, 0);
}

TEST_P(CgroupMetricsUrlTest, UnparsablePayloadIsProtocolErrorNamingTheType) {
  for (const char* type : {kCgroupV1MetricsType, kCgroupV2MetricsType}) {
    pb::Any any;
    any.set_type_url(GetParam() + type);
    // Field 1, length-delimited, claims 5 bytes and carries 2.
    any.set_value(
        std::string("\x0a\x05"
                    "ab",
                    4));
    auto stats = statsFromMetric(any);
    ASSERT_FALSE(stats.ok()) << type;
    EXPECT_EQ(stats.code(), ErrorCode::kProtocol);
    EXPECT_NE(stats.message().find(type), std::string::npos) << stats.message();
  }
}

INSTANTIATE_TEST_SUITE_P(CgroupMetrics, CgroupMetricsUrlTest, ::testing::Values(std::string(), std::string(kUrlPrefix)),
                         [](const auto& param) { return param.param.empty() ? "Bare" : "WithHost"; });

TEST(CgroupMetricsTest, OtherTypesAreProtocolErrorsNamingTheType) {
  for (const char* url :
       {"containerd.types.Metric", "io.containerd.cgroups.v3.Metrics",
        "types.googleapis.com/io.containerd.cgroups.v1.MemoryStat", "io.containerd.cgroups.v1.Metrics.extra"}) {
    pb::Any any;
    any.set_type_url(url);
    auto stats = statsFromMetric(any);
    ASSERT_FALSE(stats.ok()) << url;
    EXPECT_EQ(stats.code(), ErrorCode::kProtocol);
    EXPECT_NE(stats.message().find(url), std::string::npos) << stats.message();
  }
}

TEST(CgroupMetricsTest, EmptyTypeUrlIsProtocolError) {
  auto stats = statsFromMetric(pb::Any());
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.code(), ErrorCode::kProtocol);
  EXPECT_NE(stats.message().find("empty type URL"), std::string::npos) << stats.message();
}

// Bytes laid out by hand from containerd's field numbers, independent of the generated code: a
// stripped .proto that renumbered a field would read these wrong.
TEST(CgroupMetricsTest, ReadsContainerdWireFormat) {
  // v1 Metrics{cpu(3){usage(1){total(1)=3000000000}}, memory(4){total_inactive_file(30)=16, usage(33){usage(2)=48}}}
  const std::string v1Cpu = std::string("\x0a\x06\x08\x80\xbc\xc1\x96\x0b", 8);  // usage{total}
  const std::string v1Memory = std::string("\xf0\x01\x10", 3) + std::string("\x8a\x02\x02\x10\x30", 5);
  pb::Any v1;
  v1.set_type_url(kCgroupV1MetricsType);
  v1.set_value(std::string("\x1a") + static_cast<char>(v1Cpu.size()) + v1Cpu + std::string("\x22") +
               static_cast<char>(v1Memory.size()) + v1Memory);
  auto stats1 = statsFromMetric(v1);
  ASSERT_TRUE(stats1.ok()) << stats1.message();
  EXPECT_DOUBLE_EQ(stats1->cpuSeconds, 3.0);
  EXPECT_EQ(stats1->memoryBytes, 48 - 16);

  // v2 Metrics{cpu(2){usage_usec(1)=2000000}, memory(4){inactive_file(13)=16, usage(32)=48}}
  const std::string v2Cpu = std::string("\x08\x80\x89\x7a", 4);
  const std::string v2Memory = std::string("\x68\x10", 2) + std::string("\x80\x02\x30", 3);
  pb::Any v2;
  v2.set_type_url(std::string(kUrlPrefix) + kCgroupV2MetricsType);
  v2.set_value(std::string("\x12") + static_cast<char>(v2Cpu.size()) + v2Cpu + std::string("\x22") +
               static_cast<char>(v2Memory.size()) + v2Memory);
  auto stats2 = statsFromMetric(v2);
  ASSERT_TRUE(stats2.ok()) << stats2.message();
  EXPECT_DOUBLE_EQ(stats2->cpuSeconds, 2.0);
  EXPECT_EQ(stats2->memoryBytes, 48 - 16);
}

}  // namespace
}  // namespace qcs::runtime::containerd
