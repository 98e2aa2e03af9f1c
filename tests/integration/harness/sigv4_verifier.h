// The SigV4 check every AWS emulator of the harness makes, as AWS makes it: the Authorization header
// parsed, the key known and unexpired, its session token matching, X-Amz-Date within 5 minutes and
// matching the credential scope, the scope's region and service, `host` signed, and the signature
// recomputed with the product's own platform::signSigV4 over exactly the headers the client signed.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "harness/loopback_http_server.h"

namespace qcs::testing {

// A signing key as the emulator issued it.
struct SigV4Key {
  std::string secret;
  std::string sessionToken;  // "" for a long-term key, which must come without X-Amz-Security-Token
  bool expired = false;
};

struct SigV4Rejection {
  std::string errorCode;  // the AWS error type, e.g. "InvalidSignatureException"
  std::string message;    // AWS's message for it
};

// nullopt when the request is signed correctly for region/service with a key `lookup` knows.
std::optional<SigV4Rejection> verifySigV4(const LoopbackHttpRequest& request,
                                          const std::function<std::optional<SigV4Key>(const std::string&)>& lookup,
                                          const std::string& region, const std::string& service);

// "20150830T123600Z" -> a time point; nullopt if not in that exact form.
std::optional<std::chrono::system_clock::time_point> parseAmzDate(const std::string& text);

}  // namespace qcs::testing
