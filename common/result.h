// Result<T>: the one error-as-value type of the codebase.
//
// Every module boundary returns Result<T> (or Status = Result<void>). Errors carry a code a
// caller can branch on and a message a person can act on: what failed, where, and how to fix it.
// Exceptions are caught only at thread entry points and in main().
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace qcs {

enum class ErrorCode {
  kInvalidArgument,   // bad input from the operator or a peer
  kNotFound,          // the thing asked for does not exist
  kAlreadyExists,     // a create collided with an existing object
  kPermissionDenied,  // the OS or a peer refused us
  kUnauthenticated,   // credentials missing or wrong
  kUnavailable,       // the peer is absent or not answering; retrying may help
  kTimeout,           // the peer did not answer in time
  kConflict,          // state on the node contradicts what we need
  kProtocol,          // the peer answered with something we cannot understand
  kInternal,          // a bug or an unexpected local failure
};

const char* errorCodeName(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};

inline Error makeError(ErrorCode code, std::string message) { return Error{code, std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }
  ErrorCode code() const { return error().code; }
  const std::string& message() const { return error().message; }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }
  ErrorCode code() const { return error().code; }
  const std::string& message() const { return error().message; }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

inline Status okStatus() { return {}; }

// Prefixes an error's message with context ("pulling image X: " + message), keeping its code.
inline Error withContext(const Error& error, const std::string& context) {
  return Error{error.code, context + ": " + error.message};
}

}  // namespace qcs
