// A real dockerd's `awslogs` log driver (the one ECS gives the sensor) writing to the loopback
// CloudWatch Logs emulator: group creation, the stream, the lines, signatures and sequence tokens
// as the Docker 20.10 driver uses them. dockerd gets explicit credentials, IMDS disabled, and an
// explicit region and endpoint on every container, so its AWS SDK never leaves 127.0.0.1.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "harness/cloudwatch_logs_emulator.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kGroup = "/ecs/test-cluster/qualys-container-sensor";
constexpr const char* kRegion = "eu-west-1";

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

bool anyEquals(const std::vector<std::string>& lines, const std::string& wanted) {
  return std::find(lines.begin(), lines.end(), wanted) != lines.end();
}

// The N of every "standin: alive N" line, in order.
std::vector<int> aliveCounts(const std::vector<std::string>& lines) {
  std::vector<int> out;
  const std::string prefix = "standin: alive ";
  for (const auto& line : lines) {
    if (line.rfind(prefix, 0) == 0) out.push_back(std::stoi(line.substr(prefix.size())));
  }
  return out;
}

class AwslogsTest : public ::testing::Test {
 protected:
  // dockerd's environment: the given secret with the emulator's key id, and every other way the
  // SDK could find credentials or a region shut off.
  void startDockerd(const std::string& secretAccessKey) {
    const std::string dir = home_.path();
    dockerd_ = Dockerd::start({
        {"AWS_ACCESS_KEY_ID", emulator_->options().accessKeyId},
        {"AWS_SECRET_ACCESS_KEY", secretAccessKey},
        {"AWS_EC2_METADATA_DISABLED", "true"},
        {"AWS_SHARED_CREDENTIALS_FILE", dir + "/no-credentials"},
        {"AWS_CONFIG_FILE", dir + "/no-config"},
    });
    ASSERT_NE(dockerd_, nullptr) << "the private dockerd did not start";
    auto image = buildStandinImage(*dockerd_);
    ASSERT_TRUE(image.ok()) << "building the stand-in image failed: " << image.message();
    image_ = *image;
  }

  void SetUp() override {
    CloudWatchLogsEmulator::Options options;
    options.region = kRegion;
    emulator_ = CloudWatchLogsEmulator::start(options);
    ASSERT_NE(emulator_, nullptr);
  }

  // `docker run -d` of the stand-in with the awslogs driver pointed at the emulator; the container
  // id, or docker's error.
  Result<std::string> runWithAwslogs(const std::string& name) {
    return dockerd_->cli("run -d --network none --name " + name +
                         " --log-driver awslogs"
                         " --log-opt awslogs-endpoint=" +
                         emulator_->endpoint() + " --log-opt awslogs-region=" + kRegion +
                         " --log-opt awslogs-group=" + kGroup +
                         " --log-opt awslogs-create-group=true"
                         " --log-opt awslogs-force-flush-interval-seconds=1 " +
                         image_ + " --registry-sensor --storage-driver-type overlay2");
  }

  // dockerd's AWS SDK names the host it failed to reach; none but the emulator may appear.
  void expectNoOtherAwsHostContacted() {
    const std::string log = dockerd_->log();
    EXPECT_FALSE(contains(log, "169.254.")) << "dockerd tried the instance metadata service:\n" << log;
    EXPECT_FALSE(contains(log, "amazonaws.com")) << "dockerd tried a real AWS endpoint:\n" << log;
  }

  // Declared first so it outlives dockerd, whose teardown flushes the drivers' last batches.
  std::unique_ptr<CloudWatchLogsEmulator> emulator_;
  TempDir home_{"qcs-it-awslogs-"};
  std::unique_ptr<Dockerd> dockerd_;
  std::string image_;
};

TEST_F(AwslogsTest, DriverCreatesTheGroupAndStreamAndDeliversTheSensorLines) {
  startDockerd(emulator_->options().secretAccessKey);
  auto id = runWithAwslogs("qcs-awslogs-delivers");
  ASSERT_TRUE(id.ok()) << id.message();

  // The driver names the stream after the container's full id.
  EXPECT_EQ(emulator_->groups(), std::vector<std::string>{kGroup});
  EXPECT_EQ(emulator_->streams(kGroup), std::vector<std::string>{*id});
  // It tries the stream first, creates the group on ResourceNotFoundException, then the stream.
  EXPECT_EQ(emulator_->calls("CreateLogStream"), 2);
  EXPECT_EQ(emulator_->calls("CreateLogGroup"), 1);

  const bool arrived = waitFor(
      [&] {
        auto lines = emulator_->events(kGroup, *id);
        return anyEquals(lines, "standin: args: --registry-sensor --storage-driver-type overlay2") &&
               anyEquals(lines, "standin: alive 1");
      },
      30s);
  const auto lines = emulator_->events(kGroup, *id);
  ASSERT_TRUE(arrived) << "lines stored so far: " << ::testing::PrintToString(lines)
                       << "; rejections: " << ::testing::PrintToString(emulator_->rejections());
  // The stand-in's first line comes first: events keep the container's order.
  EXPECT_EQ(lines.front(), "standin: args: --registry-sensor --storage-driver-type overlay2");
  EXPECT_GE(emulator_->calls("PutLogEvents"), 1);
  // The only refusal a healthy start meets is the missing group that makes the driver create it.
  const auto rejections = emulator_->rejections();
  ASSERT_EQ(rejections.size(), 1u) << ::testing::PrintToString(rejections);
  EXPECT_TRUE(contains(rejections[0], "CreateLogStream: ResourceNotFoundException")) << rejections[0];

  // A second container on the same group finds it and only adds its own stream.
  auto second = runWithAwslogs("qcs-awslogs-second");
  ASSERT_TRUE(second.ok()) << second.message();
  EXPECT_EQ(emulator_->calls("CreateLogGroup"), 1);
  std::vector<std::string> both{*id, *second};
  std::sort(both.begin(), both.end());
  EXPECT_EQ(emulator_->streams(kGroup), both);
  expectNoOtherAwsHostContacted();
}

TEST_F(AwslogsTest, DriverRecoversFromAnInvalidSequenceTokenWithoutLosingLines) {
  startDockerd(emulator_->options().secretAccessKey);
  auto id = runWithAwslogs("qcs-awslogs-sequence");
  ASSERT_TRUE(id.ok()) << id.message();
  ASSERT_TRUE(waitFor([&] { return !aliveCounts(emulator_->events(kGroup, *id)).empty(); }, 30s))
      << ::testing::PrintToString(emulator_->rejections());

  // Another writer moved the stream on: the driver's next put is refused, and it retries with the
  // token the error names.
  ASSERT_TRUE(emulator_->advanceSequenceToken(kGroup, *id));
  const int seenBefore = int(aliveCounts(emulator_->events(kGroup, *id)).size());
  const bool refusedThenRecovered = waitFor(
      [&] {
        const auto rejections = emulator_->rejections();
        const bool refused = std::any_of(rejections.begin(), rejections.end(), [](const std::string& r) {
          return contains(r, "PutLogEvents: InvalidSequenceTokenException");
        });
        return refused && int(aliveCounts(emulator_->events(kGroup, *id)).size()) >= seenBefore + 2;
      },
      30s);
  const auto counts = aliveCounts(emulator_->events(kGroup, *id));
  ASSERT_TRUE(refusedThenRecovered) << "alive lines: " << ::testing::PrintToString(counts)
                                    << "; rejections: " << ::testing::PrintToString(emulator_->rejections());
  // The refused batch was sent again, not dropped: the counts run 1, 2, 3, ... without a gap.
  for (size_t i = 0; i < counts.size(); ++i) EXPECT_EQ(counts[i], int(i) + 1) << ::testing::PrintToString(counts);
  expectNoOtherAwsHostContacted();
}

TEST_F(AwslogsTest, WrongSecretKeyFailsTheStartWithTheSignatureErrorAndStoresNothing) {
  startDockerd("not-the-secret-the-emulator-knows-0000000");
  auto run = runWithAwslogs("qcs-awslogs-badsecret");
  ASSERT_FALSE(run.ok()) << "the container started although every signature was wrong";
  EXPECT_TRUE(contains(run.message(), "InvalidSignatureException")) << run.message();
  EXPECT_TRUE(contains(run.message(), "The request signature we calculated does not match")) << run.message();

  auto state = dockerd_->cli("inspect -f '{{.State.Running}} {{.State.ExitCode}}' qcs-awslogs-badsecret");
  ASSERT_TRUE(state.ok()) << state.message();
  EXPECT_TRUE(contains(*state, "false")) << *state;

  EXPECT_TRUE(emulator_->groups().empty()) << ::testing::PrintToString(emulator_->groups());
  EXPECT_GE(emulator_->calls("CreateLogStream"), 1);
  // The signature error is not "group missing", so the driver never tries to create the group.
  EXPECT_EQ(emulator_->calls("CreateLogGroup"), 0);
  EXPECT_EQ(emulator_->calls("PutLogEvents"), 0);
  const auto rejections = emulator_->rejections();
  ASSERT_FALSE(rejections.empty());
  for (const auto& rejection : rejections) {
    EXPECT_TRUE(contains(rejection, "CreateLogStream: InvalidSignatureException")) << rejection;
  }
  expectNoOtherAwsHostContacted();
}

}  // namespace
}  // namespace qcs::testing
