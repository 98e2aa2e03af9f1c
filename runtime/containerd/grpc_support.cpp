#include "runtime/containerd/grpc_support.h"

#include <unistd.h>

#include "runtime/containerd/containerd_client.h"

namespace qcs::runtime::containerd::detail {

namespace {

bool contains(const std::string& text, const char* needle) { return text.find(needle) != std::string::npos; }

std::string millis(std::chrono::milliseconds timeout) { return std::to_string(timeout.count()) + "ms"; }

}  // namespace

Error mapStatus(const grpc::Status& status, const std::string& what, const std::string& socketPath,
                std::chrono::milliseconds timeout) {
  const std::string& message = status.error_message();
  const std::string on = " on " + socketPath;
  switch (status.error_code()) {
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return makeError(ErrorCode::kTimeout, "containerd: " + what + on + " did not answer within " + millis(timeout) +
                                                " (the daemon is stuck or overloaded, or something that is not "
                                                "containerd listens there)");
    case grpc::StatusCode::UNAVAILABLE:
      // gRPC words connect() failures as "...: unix:/path: <strerror>".
      if (contains(message, "Permission denied")) {
        return makeError(ErrorCode::kPermissionDenied, "containerd: permission denied on " + socketPath +
                                                           " (the agent runs as uid " + std::to_string(::geteuid()) +
                                                           "; run it as root or give it access to the socket's group)");
      }
      if (contains(message, "No such file or directory")) {
        return makeError(ErrorCode::kUnavailable, "containerd: no socket at " + socketPath +
                                                      " (is containerd running? is runtime.endpoint right?)");
      }
      if (contains(message, "Connection refused")) {
        return makeError(ErrorCode::kUnavailable,
                         "containerd: nothing answers on " + socketPath + " (is containerd running?)");
      }
      // The socket accepts connections but no HTTP/2 SETTINGS come back within the deadline.
      if (contains(message, "timed out") || contains(message, "SETTINGS frame")) {
        return makeError(ErrorCode::kTimeout, "containerd: " + what + on + " did not answer within " + millis(timeout) +
                                                  " (the daemon is stuck or overloaded, or something that is not "
                                                  "containerd listens there)");
      }
      if (contains(message, "http1.x server")) {
        return makeError(ErrorCode::kProtocol, "containerd: " + socketPath +
                                                   " answers HTTP/1, not gRPC (is that Docker's socket? set "
                                                   "runtime.kind to docker)");
      }
      return makeError(ErrorCode::kUnavailable,
                       "containerd: " + what + on + " failed: " + message + " (is containerd running?)");
    case grpc::StatusCode::PERMISSION_DENIED:
      return makeError(ErrorCode::kPermissionDenied, "containerd: " + what + on + " was refused: " + message);
    case grpc::StatusCode::UNAUTHENTICATED:
      return makeError(ErrorCode::kUnauthenticated, "containerd: " + what + on + " was refused: " + message);
    case grpc::StatusCode::NOT_FOUND: return makeError(ErrorCode::kNotFound, "containerd: " + what + ": " + message);
    case grpc::StatusCode::ALREADY_EXISTS:
      return makeError(ErrorCode::kAlreadyExists, "containerd: " + what + ": " + message);
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return makeError(ErrorCode::kInvalidArgument, "containerd: " + what + ": " + message);
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ABORTED: return makeError(ErrorCode::kConflict, "containerd: " + what + ": " + message);
    case grpc::StatusCode::UNIMPLEMENTED:
      return makeError(ErrorCode::kProtocol, "containerd: " + what + on + " is not implemented there (" + message +
                                                 "); is that containerd, and a version that has it?");
    case grpc::StatusCode::CANCELLED:
      return makeError(ErrorCode::kUnavailable, "containerd: " + what + on + " was cancelled: " + message);
    default:
      return makeError(ErrorCode::kInternal, "containerd: " + what + on + " failed (gRPC code " +
                                                 std::to_string(int(status.error_code())) + "): " + message);
  }
}

void prepareContext(grpc::ClientContext& context, const std::string& nameSpace, std::chrono::milliseconds timeout) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  context.AddMetadata(kNamespaceHeader, nameSpace);
}

std::chrono::system_clock::time_point toTimePoint(const google::protobuf::Timestamp& timestamp) {
  return std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::seconds(timestamp.seconds()) + std::chrono::nanoseconds(timestamp.nanos())));
}

void setTimestamp(google::protobuf::Timestamp& timestamp, std::chrono::system_clock::time_point at) {
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
  timestamp.set_seconds(nanos / 1000000000);
  timestamp.set_nanos(int32_t(nanos % 1000000000));
}

}  // namespace qcs::runtime::containerd::detail
