#include "harness/loopback_http_server.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <exception>
#include <iostream>

namespace qcs::testing {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

}  // namespace

bool LoopbackHttpRequest::hasHeader(const std::string& name) const {
  const std::string wanted = lower(name);
  return std::any_of(headers.begin(), headers.end(), [&](const auto& h) { return lower(h.first) == wanted; });
}

std::string LoopbackHttpRequest::header(const std::string& name) const {
  const std::string wanted = lower(name);
  for (const auto& [n, v] : headers) {
    if (lower(n) == wanted) return v;
  }
  return {};
}

struct LoopbackHttpServer::Socket {
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
};

LoopbackHttpServer::LoopbackHttpServer(Handler handler) : handler_(std::move(handler)) {}

std::unique_ptr<LoopbackHttpServer> LoopbackHttpServer::start(const std::string& name, Handler handler) {
  std::unique_ptr<LoopbackHttpServer> server(new LoopbackHttpServer(std::move(handler)));
  server->socket_ = std::make_unique<Socket>();
  beast::error_code ec;
  auto& acceptor = server->socket_->acceptor;
  tcp::endpoint where(net::ip::make_address("127.0.0.1"), 0);
  acceptor.open(where.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(where, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    std::cerr << name << ": cannot listen on 127.0.0.1: " << ec.message() << "\n";
    return nullptr;
  }
  server->port_ = acceptor.local_endpoint().port();
  server->thread_ = std::thread([raw = server.get()] { raw->serve(); });
  return server;
}

LoopbackHttpServer::~LoopbackHttpServer() {
  stopping_ = true;
  {
    std::lock_guard lock(connectionMu_);
    if (connectionFd_ >= 0) ::shutdown(connectionFd_, SHUT_RDWR);
  }
  if (thread_.joinable()) {
    // Wakes the blocking accept().
    beast::error_code ec;
    tcp::socket poke(socket_->ioc);
    poke.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)), ec);
    thread_.join();
  }
}

void LoopbackHttpServer::serve() {
  while (!stopping_) {
    tcp::socket socket(socket_->ioc);
    beast::error_code ec;
    socket_->acceptor.accept(socket, ec);
    if (stopping_) return;
    if (ec) continue;
    {
      std::lock_guard lock(connectionMu_);
      connectionFd_ = socket.native_handle();
    }
    // A client that stalls must not wedge the server for the next test step.
    timeval timeout{5, 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(1 << 20);
      http::read(socket, buffer, parser, ec);
      if (ec) break;
      auto& message = parser.get();
      LoopbackHttpRequest request;
      request.method = std::string(message.method_string());
      request.target = std::string(message.target());
      for (const auto& field : message) request.headers.emplace_back(field.name_string(), field.value());
      request.body = message.body();
      LoopbackHttpResponse answer;
      try {
        answer = handler_(request);
      } catch (const std::exception& e) {
        answer = LoopbackHttpResponse{500, "text/plain", {}, std::string("emulator error: ") + e.what()};
      }
      http::response<http::string_body> response{static_cast<http::status>(answer.status), 11};
      response.set(http::field::content_type, answer.contentType);
      for (const auto& [name, value] : answer.headers) response.set(name, value);
      response.body() = answer.body;
      const bool connect = request.method == "CONNECT";
      response.keep_alive(!connect && message.keep_alive());
      response.prepare_payload();
      http::write(socket, response, ec);
      if (ec || connect || !message.keep_alive() || stopping_) break;
    }
    std::lock_guard lock(connectionMu_);
    connectionFd_ = -1;
    socket.shutdown(tcp::socket::shutdown_both, ec);
  }
}

}  // namespace qcs::testing
