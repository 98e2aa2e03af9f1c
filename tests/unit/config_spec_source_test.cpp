// The agent's desired-spec source: the secrets it reads on every reconcile, and what it says when a
// secret store is down and the value of an earlier read is kept.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>

#include "agent/components.h"
#include "agent/logging.h"

namespace qcs::agent {
namespace {

constexpr const char* kActivation = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
constexpr const char* kCustomer = "11111111-2222-3333-4444-555555555555";

// A secret whose store can be "down": it then serves its last value and says why.
class ScriptedSecret final : public platform::SecretSource {
 public:
  ScriptedSecret(std::string value, std::string name) : value_(std::move(value)), name_(std::move(name)) {}
  Result<std::string> read() override { return value_; }
  std::string describe() const override { return name_; }
  std::string staleReason() const override { return *stale; }
  std::shared_ptr<std::string> stale = std::make_shared<std::string>();

 private:
  std::string value_;
  std::string name_;
};

// Collects what the default logger writes while the test runs, then puts the old logger back.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    sink->set_pattern("%l %v");
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  // What was written since the last take().
  std::string take() {
    std::string text = out_.str();
    out_.str("");
    return text;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(ConfigSpecSourceTest, AKeptSecretIsWarnedOnceWhenItBeginsAndNotedOnceWhenItEnds) {
  LogCapture log;
  Config config;
  auto activation = std::make_unique<ScriptedSecret>(kActivation, "aws-secretsmanager qcs/ids key ACTIVATIONID");
  auto customer = std::make_unique<ScriptedSecret>(kCustomer, "env QUALYS_CUSTOMER_ID");
  auto stale = activation->stale;
  auto source = makeConfigSpecSource(config, std::move(activation), std::move(customer),
                                     std::make_shared<SecretRedactor>(), platform::PlatformInfo{});
  runtime::RuntimeInfo docker;
  docker.kind = "docker";
  docker.endpoint = "/var/run/docker.sock";

  ASSERT_TRUE(source->desiredSpec(docker).ok());
  EXPECT_EQ(log.take().find("secrets."), std::string::npos) << "a current secret is not news";

  *stale = "Secrets Manager secret qcs/ids: cannot connect to 127.0.0.1:1";
  for (int reconcile = 0; reconcile < 3; ++reconcile) {
    auto spec = source->desiredSpec(docker);
    ASSERT_TRUE(spec.ok()) << spec.message();  // the sensor keeps its spec through the outage
  }
  const std::string outage = log.take();
  EXPECT_EQ(count(outage,
                  "warning secrets.activation_id (aws-secretsmanager qcs/ids key ACTIVATIONID) could not "
                  "be read anew: Secrets Manager secret qcs/ids: cannot connect to 127.0.0.1:1"),
            1u)
      << outage;
  EXPECT_EQ(outage.find("secrets.customer_id"), std::string::npos) << outage;
  EXPECT_EQ(outage.find(kActivation), std::string::npos) << "never the value";

  stale->clear();
  ASSERT_TRUE(source->desiredSpec(docker).ok());
  ASSERT_TRUE(source->desiredSpec(docker).ok());
  const std::string back = log.take();
  EXPECT_EQ(count(back, "info secrets.activation_id (aws-secretsmanager qcs/ids key ACTIVATIONID) is read anew again"),
            1u)
      << back;
}

}  // namespace
}  // namespace qcs::agent
