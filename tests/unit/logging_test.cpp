#include "agent/logging.h"

#include <gtest/gtest.h>

namespace qcs::agent {
namespace {

TEST(SecretRedactorTest, ScrubsEveryOccurrenceOfEveryValue) {
  SecretRedactor redactor;
  redactor.add("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  redactor.add("hunter22");
  std::string line = "id=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 pw=hunter22 again 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
  redactor.apply(line);
  EXPECT_EQ(line, "id=[redacted] pw=[redacted] again [redacted]");
}

TEST(SecretRedactorTest, IgnoresValuesTooShortToBeSecrets) {
  SecretRedactor redactor;
  redactor.add("ab");
  std::string line = "about abc";
  redactor.apply(line);
  EXPECT_EQ(line, "about abc");
}

TEST(SecretRedactorTest, AValueContainingTheMarkerDoesNotLoop) {
  SecretRedactor redactor;
  redactor.add("[redacted]x");
  redactor.add("redacted");
  std::string line = "a [redacted]x b";
  redactor.apply(line);
  EXPECT_EQ(line.find("redacted]x"), std::string::npos);
}

TEST(LoggingSetupTest, RejectsUnknownLevelsAndFormats) {
  EXPECT_FALSE(setupLogging("loud", "text", nullptr).ok());
  EXPECT_FALSE(setupLogging("info", "xml", nullptr).ok());
  EXPECT_TRUE(setupLogging("debug", "json", std::make_shared<SecretRedactor>()).ok());
  EXPECT_TRUE(setupLogging("off", "text", nullptr).ok());
}

}  // namespace
}  // namespace qcs::agent
