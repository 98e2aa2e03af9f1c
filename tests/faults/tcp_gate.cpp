#include "faults/tcp_gate.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace qcs::faults {

namespace {

constexpr size_t kBufferLimit = 256 * 1024;  // per direction: stop reading until the peer catches up

sockaddr_in loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

Error osError(const std::string& what) { return makeError(ErrorCode::kInternal, what + ": " + std::strerror(errno)); }

// A non-blocking listener on 127.0.0.1:port (0 = any free port).
Result<int> listenOn(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return osError("tcp gate: socket");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address = loopback(port);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || ::listen(fd, 64) != 0) {
    Error error = osError("tcp gate: listening on 127.0.0.1:" + std::to_string(port));
    ::close(fd);
    return error;
  }
  return fd;
}

int boundPort(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return 0;
  return ntohs(address.sin_port);
}

// Closes with a RST instead of a FIN: the peer sees "connection reset", as from a crashed server.
void resetAndClose(int fd) {
  linger hard{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  ::close(fd);
}

// Loopback connects complete (or fail) at once, so a blocking connect cannot stall the loop.
int connectUpstream(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

struct Relay {
  int client = -1;
  int upstream = -1;
  std::string toUpstream;
  std::string toClient;
  bool clientEof = false;
  bool upstreamEof = false;
  bool upstreamShut = false;
  bool clientShut = false;
  // Hung up for good (POLLHUP): nothing more can be delivered to it, and it is not polled again.
  bool clientGone = false;
  bool upstreamGone = false;
  bool dead = false;

  void close() {
    if (client >= 0) ::close(client);
    if (upstream >= 0) ::close(upstream);
    client = upstream = -1;
    dead = true;
  }
  bool finished() const { return clientEof && upstreamEof && toUpstream.empty() && toClient.empty(); }
};

// Reads what fd has into buffer; false on a read error (EOF sets eof instead).
bool pull(int fd, std::string& buffer, bool& eof) {
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n > 0) {
      buffer.append(chunk, static_cast<size_t>(n));
      if (buffer.size() >= kBufferLimit) return true;
      continue;
    }
    if (n == 0) {
      eof = true;
      return true;
    }
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

// Writes what it can of buffer to fd; false on a write error.
bool push(int fd, std::string& buffer) {
  while (!buffer.empty()) {
    const ssize_t n = ::send(fd, buffer.data(), buffer.size(), MSG_NOSIGNAL);
    if (n > 0) {
      buffer.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
  return true;
}

// Wakes the loop (eventfd). A failed write means the counter is already non-zero: awake anyway.
void wake(int fd) {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof(one));
}

}  // namespace

Result<std::unique_ptr<TcpGate>> TcpGate::start(int upstreamPort) {
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) return osError("tcp gate: eventfd");
  auto listener = listenOn(0);
  if (!listener) {
    ::close(wake);
    return listener.error();
  }
  std::unique_ptr<TcpGate> gate(new TcpGate(upstreamPort, wake));
  gate->listenFd_ = listener.value();
  gate->port_ = boundPort(gate->listenFd_);
  gate->thread_ = std::thread([raw = gate.get()] { raw->run(); });
  return gate;
}

TcpGate::TcpGate(int upstreamPort, int wakeFd) : upstreamPort_(upstreamPort), wakeFd_(wakeFd) {}

TcpGate::~TcpGate() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake(wakeFd_);
  if (thread_.joinable()) thread_.join();
  if (listenFd_ >= 0) ::close(listenFd_);
  ::close(wakeFd_);
}

std::string TcpGate::address() const { return "127.0.0.1:" + std::to_string(port_); }

TcpGate::Mode TcpGate::mode() const {
  std::lock_guard lock(mu_);
  return mode_;
}

Status TcpGate::setMode(Mode mode) {
  std::unique_lock lock(mu_);
  requested_ = mode;
  lastChange_.reset();
  wake(wakeFd_);
  changed_.wait(lock, [&] { return lastChange_.has_value() || stopping_; });
  if (!lastChange_) return makeError(ErrorCode::kUnavailable, "tcp gate: stopping");
  return *lastChange_;
}

void TcpGate::run() {
  std::vector<Relay> relays;
  auto dropAll = [&] {
    for (auto& relay : relays) relay.close();
    relays.clear();
  };
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wakeFd_, POLLIN, 0});
    const bool listening = listenFd_ >= 0;
    if (listening) fds.push_back({listenFd_, POLLIN, 0});
    const size_t firstRelay = fds.size();
    for (const auto& relay : relays) {
      short clientEvents = 0;
      short upstreamEvents = 0;
      if (!relay.clientEof && relay.toUpstream.size() < kBufferLimit) clientEvents |= POLLIN;
      if (!relay.toClient.empty()) clientEvents |= POLLOUT;
      if (!relay.upstreamEof && relay.toClient.size() < kBufferLimit) upstreamEvents |= POLLIN;
      if (!relay.toUpstream.empty()) upstreamEvents |= POLLOUT;
      fds.push_back({relay.clientGone ? -1 : relay.client, clientEvents, 0});
      fds.push_back({relay.upstreamGone ? -1 : relay.upstream, upstreamEvents, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }

    if (fds[0].revents & POLLIN) {
      uint64_t count = 0;
      [[maybe_unused]] const ssize_t n = ::read(wakeFd_, &count, sizeof(count));
      std::lock_guard lock(mu_);
      if (stopping_) break;
      if (requested_) {
        const Mode want = *requested_;
        requested_.reset();
        Status result = okStatus();
        if (want == Mode::kRefusing) {
          if (listenFd_ >= 0) ::close(listenFd_);
          listenFd_ = -1;
          dropAll();
        } else {
          if (want == Mode::kDropping) dropAll();
          if (listenFd_ < 0) {
            auto listener = listenOn(port_);
            if (listener) {
              listenFd_ = listener.value();
            } else {
              result = listener.error();
            }
          }
        }
        if (result) mode_ = want;
        lastChange_ = result;
        changed_.notify_all();
      }
      continue;  // the set of descriptors may have changed: poll again
    }

    if (listening && (fds[1].revents & POLLIN)) {
      for (;;) {
        const int client = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (client < 0) break;
        if (mode() == Mode::kDropping) {
          resetAndClose(client);
          ++dropped_;
          continue;
        }
        const int upstream = connectUpstream(upstreamPort_);
        if (upstream < 0) {
          resetAndClose(client);
          continue;
        }
        Relay relay;
        relay.client = client;
        relay.upstream = upstream;
        relays.push_back(std::move(relay));
        ++relayed_;
      }
    }

    const size_t polled = (fds.size() - firstRelay) / 2;
    for (size_t i = 0; i < polled && i < relays.size(); ++i) {
      Relay& relay = relays[i];
      const short clientReady = fds[firstRelay + 2 * i].revents;
      const short upstreamReady = fds[firstRelay + 2 * i + 1].revents;
      if ((clientReady | upstreamReady) & POLLERR) {
        relay.close();
        continue;
      }
      bool ok = true;
      if (clientReady & (POLLIN | POLLHUP)) ok = pull(relay.client, relay.toUpstream, relay.clientEof);
      if (ok && (upstreamReady & (POLLIN | POLLHUP))) ok = pull(relay.upstream, relay.toClient, relay.upstreamEof);
      if (clientReady & POLLHUP) relay.clientGone = true;
      if (upstreamReady & POLLHUP) relay.upstreamGone = true;
      if (relay.clientGone) relay.toClient.clear();
      if (relay.upstreamGone) relay.toUpstream.clear();
      ok = ok && push(relay.upstream, relay.toUpstream) && push(relay.client, relay.toClient);
      const bool nothingLeft =
          (relay.clientGone && relay.toUpstream.empty()) || (relay.upstreamGone && relay.toClient.empty());
      if (!ok || nothingLeft) {
        relay.close();
        continue;
      }
      if (relay.clientEof && relay.toUpstream.empty() && !relay.upstreamShut) {
        ::shutdown(relay.upstream, SHUT_WR);
        relay.upstreamShut = true;
      }
      if (relay.upstreamEof && relay.toClient.empty() && !relay.clientShut) {
        ::shutdown(relay.client, SHUT_WR);
        relay.clientShut = true;
      }
      if (relay.finished()) relay.close();
    }
    std::erase_if(relays, [](const Relay& relay) { return relay.dead; });
  }
  dropAll();
}

}  // namespace qcs::faults
