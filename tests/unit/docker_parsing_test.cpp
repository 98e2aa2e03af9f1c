// The Docker client's parsers and request bodies, without a daemon.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "runtime/docker/docker_runtime.h"

namespace qcs::runtime::docker {
namespace {

using json = nlohmann::json;

TEST(DockerParsingTest, LogStreamsAreDemultiplexed) {
  auto frame = [](char stream, const std::string& payload) {
    std::string out{stream, 0, 0, 0};
    const uint32_t size = uint32_t(payload.size());
    out.push_back(char(size >> 24));
    out.push_back(char(size >> 16));
    out.push_back(char(size >> 8));
    out.push_back(char(size));
    return out + payload;
  };
  const std::string body = frame(1, "out one\nout ") + frame(2, "err one\n") + frame(1, "two\n") + frame(2, "tail");
  EXPECT_EQ(splitLogStream(body), (std::vector<std::string>{"out one", "err one", "out two", "tail"}));
  EXPECT_EQ(splitLogStream("raw one\r\nraw two\r\n"), (std::vector<std::string>{"raw one", "raw two"}));
  EXPECT_TRUE(splitLogStream("").empty());
}

TEST(DockerParsingTest, TheNewestLogTimestampIsFoundAcrossStreams) {
  auto frame = [](char stream, const std::string& payload) {
    std::string out{stream, 0, 0, 0};
    const uint32_t size = uint32_t(payload.size());
    out.push_back(char(size >> 24));
    out.push_back(char(size >> 16));
    out.push_back(char(size >> 8));
    out.push_back(char(size));
    return out + payload;
  };
  std::string body = frame(1, "2026-01-02T03:04:05.100000000Z standin: alive 1\n") +
                     frame(2, "2026-01-02T03:04:07.250000000Z standin: oops\n") +
                     frame(1, "2026-01-02T03:04:06.000000000Z standin: alive 2\n");
  auto newest = newestLogTimestamp(body);
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(*newest, *parseRfc3339("2026-01-02T03:04:07.25Z"));
  EXPECT_FALSE(newestLogTimestamp("").has_value());
  EXPECT_FALSE(newestLogTimestamp("no timestamp here\n").has_value());
}

TEST(DockerParsingTest, Rfc3339TimesWithNanoseconds) {
  using namespace std::chrono;
  auto parsed = parseRfc3339("2026-11-26T19:06:14.195464630Z");
  ASSERT_TRUE(parsed.has_value());
  const auto expected = sys_days{year{2026} / November / 26} + 19h + 6min + 14s + nanoseconds(195464630);
  EXPECT_EQ(duration_cast<nanoseconds>(parsed->time_since_epoch()),
            duration_cast<nanoseconds>(expected.time_since_epoch()));
  auto offset = parseRfc3339("2026-11-26T21:06:14+02:00");
  ASSERT_TRUE(offset.has_value());
  EXPECT_EQ(*offset, sys_days{year{2026} / November / 26} + 19h + 6min + 14s);
  EXPECT_FALSE(parseRfc3339("0001-01-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseRfc3339("").has_value());
  EXPECT_FALSE(parseRfc3339("2026-13-01T00:00:00Z").has_value());
  EXPECT_FALSE(parseRfc3339("2026-11-26 19:06:14Z").has_value());
}

TEST(DockerParsingTest, EventsMapToRuntimeEvents) {
  auto die = parseDockerEvent(
      R"({"status":"die","id":"abc","Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"137","name":"x"}}})");
  ASSERT_TRUE(die.has_value());
  EXPECT_EQ(die->kind, RuntimeEvent::Kind::kContainerExited);
  EXPECT_EQ(die->containerId, "abc");
  EXPECT_EQ(die->exitCode, 137);
  auto oom = parseDockerEvent(R"({"Type":"container","Action":"oom","Actor":{"ID":"abc"}})");
  ASSERT_TRUE(oom.has_value());
  EXPECT_EQ(oom->kind, RuntimeEvent::Kind::kContainerOom);
  EXPECT_EQ(parseDockerEvent(R"({"Type":"container","Action":"start","Actor":{"ID":"a"}})")->kind,
            RuntimeEvent::Kind::kContainerStarted);
  EXPECT_EQ(parseDockerEvent(R"({"Type":"container","Action":"destroy","Actor":{"ID":"a"}})")->kind,
            RuntimeEvent::Kind::kContainerRemoved);
  EXPECT_FALSE(parseDockerEvent(R"({"Type":"container","Action":"attach","Actor":{"ID":"a"}})").has_value());
  EXPECT_FALSE(parseDockerEvent(R"({"Type":"container","Action":"exec_start: sh","Actor":{"ID":"a"}})").has_value());
  EXPECT_FALSE(parseDockerEvent(R"({"Type":"image","Action":"delete","Actor":{"ID":"a"}})").has_value());
  EXPECT_FALSE(parseDockerEvent("not json").has_value());
}

TEST(DockerParsingTest, CreateBodyFollowsTheSpec) {
  ContainerSpec spec;
  spec.name = "s";
  spec.image = "img:1";
  spec.args = {"--a"};
  spec.env = {{"K", "V", false}};
  spec.resources = Resources{1, 0, 0, 0};  // 1m would be 1 share: Docker's minimum is 2
  spec.hostNetwork = false;
  json body = json::parse(createContainerBody(spec));
  EXPECT_EQ(body["HostConfig"]["CpuShares"], 2);
  EXPECT_FALSE(body["HostConfig"].contains("NanoCpus"));
  EXPECT_FALSE(body["HostConfig"].contains("Memory"));
  EXPECT_FALSE(body["HostConfig"].contains("NetworkMode"));
  EXPECT_FALSE(body["HostConfig"].contains("LogConfig"));
  EXPECT_EQ(body["Env"], json({"K=V"}));
  EXPECT_EQ(body["HostConfig"]["RestartPolicy"]["Name"], "no");
}

TEST(DockerParsingTest, InspectOfANeverStartedContainer) {
  auto info = parseContainerInspect(R"({"Id":"abc","Name":"/sensor","Image":"sha256:1",
    "Config":{"Image":"img:1","Labels":null},
    "State":{"Status":"created","ExitCode":0,"OOMKilled":false,
             "StartedAt":"0001-01-01T00:00:00Z","FinishedAt":"0001-01-01T00:00:00Z"}})");
  ASSERT_TRUE(info.ok()) << info.message();
  EXPECT_EQ(info->name, "sensor");
  EXPECT_EQ(info->state, ContainerState::kCreated);
  EXPECT_TRUE(info->labels.empty());
  EXPECT_EQ(info->startedAt, "");
  EXPECT_EQ(info->finishedAt, "");
  EXPECT_FALSE(info->startedAtTime.has_value());
  EXPECT_FALSE(parseContainerInspect("[]").ok());
}

TEST(DockerParsingTest, HumanDurations) {
  EXPECT_EQ(humanDuration(std::chrono::milliseconds(500)), "500ms");
  EXPECT_EQ(humanDuration(std::chrono::milliseconds(3000)), "3s");
  EXPECT_EQ(humanDuration(std::chrono::milliseconds(2500)), "2.5s");
  EXPECT_EQ(humanDuration(std::chrono::milliseconds(120000)), "2m");
  EXPECT_EQ(humanDuration(std::chrono::milliseconds(90000)), "1m30s");
}

}  // namespace
}  // namespace qcs::runtime::docker
