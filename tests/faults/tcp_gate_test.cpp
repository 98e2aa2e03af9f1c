#include "faults/tcp_gate.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "agent/http_server.h"
#include "harness/harness.h"
#include "harness/loopback_http_server.h"

namespace qcs::faults {
namespace {

using namespace std::chrono_literals;

// errno of a plain connect to 127.0.0.1:port (0 when it connected).
int connectErrno(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const int result = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  const int error = result == 0 ? 0 : errno;
  ::close(fd);
  return error;
}

class TcpGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = testing::LoopbackHttpServer::start("upstream", [this](const testing::LoopbackHttpRequest& request) {
      ++served_;
      testing::LoopbackHttpResponse response;
      response.contentType = "text/plain";
      response.body = request.target == "/big" ? std::string(3 << 20, 'x') + "end" : "hello " + request.target;
      return response;
    });
    ASSERT_NE(upstream_, nullptr);
    auto gate = TcpGate::start(upstream_->port());
    ASSERT_TRUE(gate.ok()) << gate.message();
    gate_ = std::move(gate.value());
  }

  Result<agent::HttpReply> get(const std::string& target) { return agent::httpGet(gate_->address(), target, 5s); }

  std::atomic<int> served_{0};
  std::unique_ptr<testing::LoopbackHttpServer> upstream_;
  std::unique_ptr<TcpGate> gate_;
};

TEST_F(TcpGateTest, RelaysBothWaysIncludingLargeBodies) {
  auto reply = get("/a");
  ASSERT_TRUE(reply.ok()) << reply.message();
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(reply->body, "hello /a");
  auto big = get("/big");
  ASSERT_TRUE(big.ok()) << big.message();
  EXPECT_EQ(big->body.size(), (3u << 20) + 3);
  EXPECT_EQ(big->body.substr(big->body.size() - 3), "end");
  EXPECT_GE(gate_->relayed(), 2u);
}

TEST_F(TcpGateTest, RefusingLooksLikeAStoppedServerAndOpenComesBackOnTheSamePort) {
  const int port = gate_->port();
  ASSERT_TRUE(gate_->setMode(TcpGate::Mode::kRefusing).ok());
  EXPECT_EQ(connectErrno(port), ECONNREFUSED);
  EXPECT_FALSE(get("/down").ok());
  const int servedWhileDown = served_;
  ASSERT_TRUE(gate_->setMode(TcpGate::Mode::kOpen).ok());
  EXPECT_EQ(gate_->port(), port);
  auto reply = get("/up");
  ASSERT_TRUE(reply.ok()) << reply.message();
  EXPECT_EQ(reply->body, "hello /up");
  EXPECT_EQ(servedWhileDown, 0) << "nothing reached the service while the gate refused";
}

TEST_F(TcpGateTest, DroppingResetsAndCountsEveryConnection) {
  ASSERT_TRUE(gate_->setMode(TcpGate::Mode::kDropping).ok());
  EXPECT_EQ(gate_->mode(), TcpGate::Mode::kDropping);
  EXPECT_FALSE(get("/x").ok());
  EXPECT_FALSE(get("/y").ok());
  EXPECT_TRUE(testing::waitFor([&] { return gate_->dropped() >= 2; }, 5s));
  EXPECT_EQ(served_, 0);
  ASSERT_TRUE(gate_->setMode(TcpGate::Mode::kOpen).ok());
  EXPECT_TRUE(get("/z").ok());
}

}  // namespace
}  // namespace qcs::faults
