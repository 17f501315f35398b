#include "env_server/client/http_endpoints.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "env_server/client/url.h"

namespace distil::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint64_t kMaxResponseBytes = 1ull << 30;
constexpr std::size_t kMaxIdleConnections = 64;

struct Connection {
  asio::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
};

struct Endpoint {
  HttpUrl url;
  std::string base;  // url.base() + url.path
  std::atomic<int> in_flight{0};
  // Down: the last exchange failed (no answer, a timeout, an endpoint fault); avoided until the
  // prober sees its health path answer 200.
  std::atomic<bool> down{false};
  std::atomic<std::int64_t> requests{0}, failures{0};
  std::mutex mutex;
  std::vector<std::unique_ptr<Connection>> idle;
};

bool overload(int status) { return status == 429 || status == 503; }

}  // namespace

std::string one_line(const std::string& body) {
  std::string out;
  bool in_tag = false, space = false;
  for (char c : body) {
    if (c == '<') in_tag = true;
    if (in_tag) {
      if (c == '>') in_tag = false;
      space = true;
      continue;
    }
    const bool blank = c == ' ' || c == '\n' || c == '\r' || c == '\t';
    if (blank) {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
    if (out.size() >= 120) return out + "...";
  }
  return out;
}

struct Endpoints::Impl {
  EndpointsConfig config;
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::atomic<std::size_t> round_robin{0};
  std::mutex rng_mutex;
  std::mt19937_64 rng{std::random_device{}()};

  // The prober: one thread, probing down endpoints' health path.
  std::mutex probe_mutex;
  std::condition_variable probe_wake;
  bool stopping = false;
  std::thread prober;

  explicit Impl(EndpointsConfig c) : config(std::move(c)) {
    const std::string& f = config.field;
    if (config.urls.empty()) throw std::invalid_argument(f + ": give at least one endpoint");
    if (config.max_attempts < 1) throw std::invalid_argument(f + ": max_attempts must be at least 1");
    if (!(config.request_timeout_s > 0)) throw std::invalid_argument(f + ": the request timeout must be > 0");
    if (!(config.overload_wait_s >= 0)) throw std::invalid_argument(f + ": the overload wait must be >= 0");
    if (!(config.probe_interval_s > 0)) throw std::invalid_argument(f + ": the probe interval must be > 0");
    if (!(config.probe_timeout_s > 0)) throw std::invalid_argument(f + ": the probe timeout must be > 0");
    for (const auto& url : config.urls) {
      auto e = std::make_unique<Endpoint>();
      e->url = parse_http_url(url, f, config.allow_path);
      e->base = e->url.base() + e->url.path;
      endpoints.push_back(std::move(e));
    }
    if (!config.endpoint_fault) config.endpoint_fault = [](int status, const std::string&) { return status >= 500; };
    if (!config.describe)
      config.describe = [](int status, const std::string& body) {
        return "HTTP " + std::to_string(status) + (body.empty() ? "" : ": " + one_line(body));
      };
    if (!config.log) config.log = [](const std::string& line) { std::fprintf(stderr, "distil client: %s\n", line.c_str()); };
    prober = std::thread([this] { probe_loop(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(probe_mutex);
      stopping = true;
    }
    probe_wake.notify_all();
    prober.join();
  }

  void mark_down(Endpoint& e, const std::string& why) {
    if (!e.down.exchange(true))
      config.log("endpoint " + e.base + " is down (" + why + "); sending work elsewhere and probing its " +
                 config.health_path);
  }

  void mark_up(Endpoint& e) {
    if (e.down.exchange(false)) config.log("endpoint " + e.base + " is back (" + config.health_path + " answered 200)");
  }

  // Every probe_interval_s, each down endpoint's health path once (on a fresh connection, with
  // its own short timeout, so a stopped server costs the prober, never a request).
  void probe_loop() {
    std::unique_lock lock(probe_mutex);
    while (!probe_wake.wait_for(lock, std::chrono::duration<double>(config.probe_interval_s), [&] { return stopping; })) {
      lock.unlock();
      for (auto& e : endpoints) {
        if (!e->down.load()) continue;
        auto outcome = exchange(*e, Method::get, config.health_path, "", config.probe_timeout_s, /*pooled=*/false);
        if (auto* reply = std::get_if<Reply>(&outcome);
            reply && (reply->status == 200 || (config.health_any_answer && reply->status < 500)))
          mark_up(*e);
      }
      lock.lock();
    }
  }

  // Picks an endpoint: a healthy one other than `avoid` (the one that just failed), then any
  // healthy one, then (none healthy) a down one other than `avoid`, then anything.
  std::size_t pick(std::size_t avoid) {
    const std::size_t n = endpoints.size();
    const std::size_t start = round_robin.fetch_add(1);
    auto usable = [&](std::size_t i, bool allow_down, bool allow_avoid) {
      return (allow_avoid || i != avoid || n == 1) && (allow_down || !endpoints[i]->down.load());
    };
    for (int relax = 0; relax < 4; ++relax) {
      const bool allow_down = relax >= 2, allow_avoid = relax == 1 || relax == 3;
      std::size_t best = n;
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = (start + k) % n;
        if (!usable(i, allow_down, allow_avoid)) continue;
        if (config.policy == EndpointPolicy::round_robin) return i;
        if (best == n || endpoints[i]->in_flight.load() < endpoints[best]->in_flight.load()) best = i;
      }
      if (best != n) return best;
    }
    return start % n;
  }

  double backoff_s(int attempt) {
    const double base = std::min(config.backoff_max_s, config.backoff_initial_s * std::pow(2.0, attempt - 1));
    std::lock_guard lock(rng_mutex);
    return base * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
  }

  std::unique_ptr<Connection> take_connection(Endpoint& e) {
    std::lock_guard lock(e.mutex);
    if (e.idle.empty()) return nullptr;
    auto c = std::move(e.idle.back());
    e.idle.pop_back();
    return c;
  }

  void return_connection(Endpoint& e, std::unique_ptr<Connection> c) {
    std::lock_guard lock(e.mutex);
    if (e.idle.size() < kMaxIdleConnections) e.idle.push_back(std::move(c));
  }

  // Runs the io_context of `c` until the pending operation completes (or the stream's timer
  // fires).
  static void run(Connection& c) {
    c.ioc.restart();
    c.ioc.run();
  }

  Outcome exchange(Endpoint& e, Method method, const std::string& target, const std::string& body,
                   double timeout_s = 0, bool pooled = true) {
    std::string path = e.url.path + target;
    if (path.empty()) path = "/";
    bhttp::request<bhttp::string_body> req{method == Method::post ? bhttp::verb::post : bhttp::verb::get, path, 11};
    const bool ipv6 = e.url.host.find(':') != std::string::npos;
    req.set(bhttp::field::host, (ipv6 ? "[" + e.url.host + "]" : e.url.host) + ":" + e.url.port);
    req.set(bhttp::field::user_agent, config.user_agent);
    if (!config.auth_token.empty()) req.set(bhttp::field::authorization, "Bearer " + config.auth_token);
    if (method == Method::post) req.set(bhttp::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();

    // A pooled connection may have been closed by the server (idle timeout, restart); if it fails
    // before any answer arrives, the request is sent once more on a fresh connection.
    for (int fresh_try = 0; fresh_try < 2; ++fresh_try) {
      auto conn = fresh_try == 0 && pooled ? take_connection(e) : nullptr;
      const bool reused = conn != nullptr;
      if (!conn) conn = std::make_unique<Connection>();
      const auto timeout = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(timeout_s > 0 ? timeout_s : config.request_timeout_s));
      conn->stream.expires_after(timeout);
      beast::error_code ec;
      if (!reused) {
        tcp::resolver resolver(conn->ioc);
        auto results = resolver.resolve(e.url.host, e.url.port, ec);
        if (ec) return TransportError{"resolve " + e.url.host + ": " + ec.message(), true};
        conn->stream.async_connect(results, [&](beast::error_code error, const tcp::endpoint&) { ec = error; });
        run(*conn);
        if (ec) return TransportError{"connect " + e.base + ": " + ec.message(), true};
        conn->stream.socket().set_option(tcp::no_delay(true), ec);
        ec = {};
      }
      bhttp::async_write(conn->stream, req, [&](beast::error_code error, std::size_t) { ec = error; });
      run(*conn);
      if (ec) {
        if (reused && ec != beast::error::timeout) continue;
        return TransportError{"send to " + e.base + ": " + ec.message(), false};
      }
      bhttp::response_parser<bhttp::string_body> parser;
      parser.body_limit(kMaxResponseBytes);
      conn->buffer.clear();
      bhttp::async_read(conn->stream, conn->buffer, parser, [&](beast::error_code error, std::size_t) { ec = error; });
      run(*conn);
      if (ec) {
        const bool nothing_arrived = !parser.got_some();
        if (reused && nothing_arrived && ec != beast::error::timeout) continue;
        return TransportError{"read from " + e.base + ": " + ec.message(), false};
      }
      auto res = parser.release();
      Reply reply;
      reply.status = static_cast<int>(res.result_int());
      if (auto it = res.find(bhttp::field::retry_after); it != res.end()) {
        try {
          reply.retry_after_s = std::stod(std::string(it->value()));
        } catch (const std::exception&) {
          reply.retry_after_s = 0;
        }
      }
      reply.body = std::move(res.body());
      if (res.keep_alive() && pooled) {
        conn->stream.expires_never();
        return_connection(e, std::move(conn));
      }
      return reply;
    }
    return TransportError{"connection to " + e.base + " failed twice", false};
  }

  Outcome send(Method method, const std::string& target, const std::string& body, bool expect_object) {
    std::string last_problem = "no attempt made";
    std::size_t avoid = endpoints.size();
    double overload_waited_s = 0;
    int faults = 0, round = 0;
    for (;;) {
      ++round;
      const std::size_t index = pick(avoid);
      Endpoint& e = *endpoints[index];
      ++e.in_flight;
      ++e.requests;
      auto outcome = exchange(e, method, target, body);
      --e.in_flight;
      double wait_s = backoff_s(std::min(faults + 1, 30));
      if (auto* error = std::get_if<TransportError>(&outcome)) {
        last_problem = error->message;
        mark_down(e, error->message);
        ++faults;
        ++e.failures;
      } else {
        auto& reply = std::get<Reply>(outcome);
        if (overload(reply.status)) {
          last_problem = config.describe(reply.status, reply.body) + " (from " + e.base + ")";
          // The server says when to come back; wait at least that long, within the budget.
          if (reply.retry_after_s > 0) wait_s = std::max(wait_s, reply.retry_after_s);
          wait_s = std::min(wait_s, config.overload_wait_s - overload_waited_s);
          if (wait_s <= 0) return std::move(reply);
          overload_waited_s += wait_s;
        } else {
          const bool not_object = expect_object && reply.status == 200 &&
                                  !nlohmann::json::parse(reply.body, nullptr, false).is_object();
          const bool fault = reply.status != 200 && config.endpoint_fault(reply.status, reply.body);
          if (!fault && !not_object) {
            if (e.down.load()) mark_up(e);
            return std::move(reply);
          }
          last_problem = (not_object ? "HTTP 200 with a body that is not a JSON object: " + one_line(reply.body)
                                     : config.describe(reply.status, reply.body)) +
                         " (from " + e.base + ")";
          mark_down(e, last_problem);
          ++faults;
          ++e.failures;
        }
      }
      if (faults >= config.max_attempts)
        return TransportError{"gave up after " + std::to_string(faults) + " attempts without a usable answer (" +
                                  std::to_string(round) + " requests); last: " + last_problem,
                              false};
      avoid = index;
      // Another endpoint is healthy: fail over at once; otherwise back off before the retry.
      bool other_healthy = false;
      for (std::size_t i = 0; i < endpoints.size(); ++i) other_healthy |= i != index && !endpoints[i]->down.load();
      const bool overloaded = std::holds_alternative<Reply>(outcome) && overload(std::get<Reply>(outcome).status);
      if (overloaded || !other_healthy) std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
    }
  }
};

Endpoints::Endpoints(EndpointsConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Endpoints::~Endpoints() = default;

Outcome Endpoints::send(Method method, const std::string& target, const std::string& body, bool expect_object) {
  return impl_->send(method, target, body, expect_object);
}

Outcome Endpoints::exchange(std::size_t index, Method method, const std::string& target, const std::string& body,
                            double timeout_s, bool pooled) {
  return impl_->exchange(*impl_->endpoints.at(index), method, target, body, timeout_s, pooled);
}

std::size_t Endpoints::size() const { return impl_->endpoints.size(); }
const std::string& Endpoints::base(std::size_t index) const { return impl_->endpoints.at(index)->base; }
bool Endpoints::down(std::size_t index) const { return impl_->endpoints.at(index)->down.load(); }
void Endpoints::mark_down(std::size_t index, const std::string& why) { impl_->mark_down(*impl_->endpoints.at(index), why); }
const EndpointsConfig& Endpoints::config() const { return impl_->config; }

std::vector<EndpointStats> Endpoints::stats() const {
  std::vector<EndpointStats> out;
  for (const auto& e : impl_->endpoints) out.push_back({e->base, e->requests.load(), e->failures.load(), e->down.load()});
  return out;
}

}  // namespace distil::http
