// TcpGate: a loopback TCP relay in front of a service (the registry, the Secrets Manager emulator),
// so the fault suite can take the service away and bring it back at the same address - which the
// harness's services cannot do themselves (a restarted one would listen on another port).
//
// Contract:
// - Listens on 127.0.0.1:<free port> and relays every connection, byte for byte and in both
//   directions, to 127.0.0.1:<upstream port>; half-closes are passed on.
// - setMode() takes effect before it returns: kRefusing closes the listener (new connections are
//   refused, as by a stopped server) and drops every relayed connection; kDropping listens but
//   resets each new connection at once (a crashed server behind a load balancer) and counts them;
//   kOpen listens again on the same port and relays.
// - One thread does all the socket work; the object is safe to use from any thread. Destroying it
//   stops that thread and closes every socket.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/result.h"

namespace qcs::faults {

class TcpGate {
 public:
  enum class Mode { kOpen, kRefusing, kDropping };

  static Result<std::unique_ptr<TcpGate>> start(int upstreamPort);
  ~TcpGate();
  TcpGate(const TcpGate&) = delete;
  TcpGate& operator=(const TcpGate&) = delete;

  int port() const { return port_; }
  // "127.0.0.1:PORT"
  std::string address() const;

  Status setMode(Mode mode);
  Mode mode() const;
  // Connections reset in kDropping mode since the gate started.
  uint64_t dropped() const { return dropped_.load(); }
  // Connections relayed since the gate started.
  uint64_t relayed() const { return relayed_.load(); }

 private:
  struct Loop;
  TcpGate(int upstreamPort, int wakeFd);
  void run();

  const int upstreamPort_;
  int port_ = 0;
  int wakeFd_ = -1;  // eventfd: wakes the loop to apply a mode change or stop

  mutable std::mutex mu_;
  std::condition_variable changed_;
  Mode mode_ = Mode::kOpen;           // what the loop applied last
  std::optional<Mode> requested_;     // a change the loop has not applied yet
  std::optional<Status> lastChange_;  // the result of the last applied change
  bool stopping_ = false;

  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> relayed_{0};
  int listenFd_ = -1;  // owned by the loop's thread after start()
  std::thread thread_;
};

}  // namespace qcs::faults
