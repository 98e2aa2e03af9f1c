// Internal to the containerd runtime: how every gRPC call to containerd is made and how its
// failures become errors a person can act on. Not part of the module's interface.
#pragma once

#include <google/protobuf/any.pb.h>
#include <google/protobuf/timestamp.pb.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>

#include "common/result.h"

namespace qcs::runtime::containerd::detail {

// grpc::Status -> an error a person can act on. `what` names the call ("Version"); timeout is the
// call's deadline (quoted when it was exceeded).
Error mapStatus(const grpc::Status& status, const std::string& what, const std::string& socketPath,
                std::chrono::milliseconds timeout);

// A unary call's context: the deadline and the namespace header.
void prepareContext(grpc::ClientContext& context, const std::string& nameSpace, std::chrono::milliseconds timeout);

std::chrono::system_clock::time_point toTimePoint(const google::protobuf::Timestamp& timestamp);
void setTimestamp(google::protobuf::Timestamp& timestamp, std::chrono::system_clock::time_point at);

// containerd's type URLs are the bare message name ("containerd.events.TaskExit"), which
// Any::UnpackTo rejects for want of a '/'; both forms are accepted here.
template <typename Message>
bool unpackAny(const google::protobuf::Any& any, Message& message) {
  const std::string& url = any.type_url();
  const auto slash = url.rfind('/');
  const std::string name = slash == std::string::npos ? url : url.substr(slash + 1);
  return name == Message::descriptor()->full_name() && message.ParseFromString(any.value());
}

}  // namespace qcs::runtime::containerd::detail
