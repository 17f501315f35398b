// A real HTTP/1.1 server on loopback for client tests: a thread per connection, keep-alive, and
// a handler that sees each request. It stands in for a peer (vLLM's completions API, a remote
// teacher) whose documented answers the handler writes.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace distil::testing {

struct FixtureRequest {
  std::string method;
  std::string target;
  std::string body;
  std::string authorization;
};

struct FixtureResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

class FixtureHttpServer {
 public:
  using Handler = std::function<FixtureResponse(const FixtureRequest&)>;

  explicit FixtureHttpServer(Handler handler)
      : handler_(std::move(handler)), acceptor_(ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~FixtureHttpServer() {
    stopping_ = true;
    boost::beast::error_code ec;
    acceptor_.close(ec);
    // Unblock accept() by connecting once.
    try {
      boost::asio::io_context ioc;
      boost::asio::ip::tcp::socket s(ioc);
      s.connect({boost::asio::ip::make_address("127.0.0.1"), port_}, ec);
    } catch (...) {
    }
    accept_thread_.join();
    std::lock_guard lock(mutex_);
    for (auto& socket : sockets_) {
      socket->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
      socket->close(ec);
    }
    for (auto& t : connections_) t.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_.load(); }
  // The most requests the handler was running at once.
  int max_in_flight() const { return max_in_flight_.load(); }

 private:
  void accept_loop() {
    while (!stopping_) {
      auto socket = std::make_shared<boost::asio::ip::tcp::socket>(ioc_);
      boost::beast::error_code ec;
      acceptor_.accept(*socket, ec);
      if (ec || stopping_) return;
      std::lock_guard lock(mutex_);
      sockets_.push_back(socket);
      connections_.emplace_back([this, socket] { serve(*socket); });
    }
  }

  void serve(boost::asio::ip::tcp::socket& socket) {
    namespace http = boost::beast::http;
    boost::beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      boost::beast::error_code ec;
      http::read(socket, buffer, req, ec);
      if (ec) return;
      ++requests_;
      const int now = ++in_flight_;
      for (int seen = max_in_flight_.load(); now > seen && !max_in_flight_.compare_exchange_weak(seen, now);) {
      }
      FixtureRequest request{std::string(req.method_string()), std::string(req.target()), req.body(),
                             std::string(req[http::field::authorization])};
      FixtureResponse answer = handler_(request);
      --in_flight_;
      http::response<http::string_body> res{static_cast<http::status>(answer.status), 11};
      res.set(http::field::content_type, answer.content_type);
      res.keep_alive(req.keep_alive());
      res.body() = answer.body;
      res.prepare_payload();
      http::write(socket, res, ec);
      if (ec || !req.keep_alive()) return;
    }
  }

  Handler handler_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> requests_{0}, in_flight_{0}, max_in_flight_{0};
  std::mutex mutex_;
  std::vector<std::shared_ptr<boost::asio::ip::tcp::socket>> sockets_;
  std::vector<std::thread> connections_;
  std::thread accept_thread_;
};

}  // namespace distil::testing
