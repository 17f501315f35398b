#include "env_server/client.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <variant>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace distil::env {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kFallbackBatchItems = 64;  // when /v1/limits cannot be read
constexpr std::uint64_t kMaxResponseBytes = 1ull << 30;

struct Connection {
  asio::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
};

struct Reply {
  int status = 0;
  std::string body;
  double retry_after_s = 0.0;  // from Retry-After, 0 if absent
};

// Why a request got no HTTP answer.
struct TransportError {
  std::string message;
  bool connect_failed = false;
};

struct Endpoint {
  std::string base;
  std::string host;
  std::string port;
  std::atomic<int> in_flight{0};
  std::atomic<std::int64_t> down_until_ns{0};
  std::mutex mutex;
  std::vector<std::unique_ptr<Connection>> idle;
};

void parse_base_url(const std::string& url, Endpoint& e) {
  std::string rest = url;
  const std::string scheme = "http://";
  if (rest.rfind(scheme, 0) == 0) rest = rest.substr(scheme.size());
  else if (rest.find("://") != std::string::npos)
    throw std::invalid_argument("endpoint '" + url + "': only http:// is supported");
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos)
    throw std::invalid_argument("endpoint '" + url + "': give a base URL without a path (http://host:port)");
  std::string host = rest, port = "80";
  if (!rest.empty() && rest.front() == '[') {  // [::1]:8080
    const auto close = rest.find(']');
    if (close == std::string::npos) throw std::invalid_argument("endpoint '" + url + "': unterminated [IPv6] host");
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') throw std::invalid_argument("endpoint '" + url + "': expected :port after ]");
      port = rest.substr(close + 2);
    }
  } else if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) throw std::invalid_argument("endpoint '" + url + "': no host");
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) || std::stoi(port) == 0 ||
      std::stoi(port) > 65535)
    throw std::invalid_argument("endpoint '" + url + "': bad port '" + port + "'");
  e.base = "http://" + rest;
  e.host = host;
  e.port = port;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

json item_to_json(const FeedbackItem& item) {
  json j = json::object();
  if (item.task) j["task"] = *item.task;
  else j["task_id"] = item.task_id;
  j["response"] = item.response;
  if (!item.options.is_null() && !(item.options.is_object() && item.options.empty())) j["options"] = item.options;
  return j;
}

// "HTTP 404 unknown_task: no task with id 'x' is loaded"
std::string describe_error(int status, const std::string& body) {
  std::string text = "HTTP " + std::to_string(status);
  const json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const auto& e = j["error"];
    if (e.contains("code") && e["code"].is_string()) text += " " + e["code"].get<std::string>();
    if (e.contains("message") && e["message"].is_string()) text += ": " + e["message"].get<std::string>();
  } else if (!body.empty()) {
    text += ": " + body.substr(0, 200);
  }
  return text;
}

std::string error_code_of(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("code") &&
      j["error"]["code"].is_string())
    return j["error"]["code"].get<std::string>();
  return "";
}

}  // namespace

struct FeedbackClient::Impl {
  ClientConfig config;
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::atomic<std::size_t> round_robin{0};
  std::atomic<std::size_t> batch_limit{0};
  std::mutex rng_mutex;
  std::mt19937_64 rng{std::random_device{}()};

  explicit Impl(ClientConfig c) : config(std::move(c)) {
    if (config.endpoints.empty()) throw std::invalid_argument("ClientConfig.endpoints: give at least one endpoint");
    if (config.max_attempts < 1) throw std::invalid_argument("ClientConfig.max_attempts: must be at least 1");
    if (!(config.request_timeout_s > 0)) throw std::invalid_argument("ClientConfig.request_timeout_s: must be > 0");
    for (const auto& url : config.endpoints) {
      auto e = std::make_unique<Endpoint>();
      parse_base_url(url, *e);
      endpoints.push_back(std::move(e));
    }
    if (config.max_batch_items > 0) batch_limit = config.max_batch_items;
    if (config.max_concurrent_requests == 0) config.max_concurrent_requests = 4 * endpoints.size();
  }

  // Picks an endpoint: not marked down, not `avoid` (the one that just failed) when another exists.
  std::size_t pick(std::size_t avoid) {
    const std::size_t n = endpoints.size();
    const std::size_t start = round_robin.fetch_add(1);
    const auto now = now_ns();
    auto usable = [&](std::size_t i, bool allow_down, bool allow_avoid) {
      return (allow_avoid || i != avoid || n == 1) && (allow_down || endpoints[i]->down_until_ns.load() <= now);
    };
    for (int relax = 0; relax < 3; ++relax) {
      const bool allow_down = relax >= 1, allow_avoid = relax >= 2;
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
    if (e.idle.size() < 64) e.idle.push_back(std::move(c));
  }

  // Runs the io_context of `c` until the pending operation completes.
  static void run(Connection& c) {
    c.ioc.restart();
    c.ioc.run();
  }

  // One HTTP exchange; a Reply, or a TransportError when no answer came.
  std::variant<Reply, TransportError> exchange(Endpoint& e, http::verb verb, const std::string& target,
                                               const std::string& body) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, e.host + ":" + e.port);
    req.set(http::field::user_agent, "distil-env-client");
    if (!config.auth_token.empty()) req.set(http::field::authorization, "Bearer " + config.auth_token);
    if (verb == http::verb::post) req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();

    // A pooled connection may have been closed by the server (idle timeout, restart); if it fails
    // before any answer arrives, the request is sent once more on a fresh connection.
    for (int fresh_try = 0; fresh_try < 2; ++fresh_try) {
      auto conn = fresh_try == 0 ? take_connection(e) : nullptr;
      const bool reused = conn != nullptr;
      if (!conn) conn = std::make_unique<Connection>();
      const auto timeout = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(config.request_timeout_s));
      conn->stream.expires_after(timeout);
      beast::error_code ec;
      if (!reused) {
        tcp::resolver resolver(conn->ioc);
        auto results = resolver.resolve(e.host, e.port, ec);
        if (ec) return TransportError{"resolve " + e.host + ": " + ec.message(), true};
        conn->stream.async_connect(results, [&](beast::error_code error, const tcp::endpoint&) { ec = error; });
        run(*conn);
        if (ec) return TransportError{"connect " + e.base + ": " + ec.message(), true};
        conn->stream.socket().set_option(tcp::no_delay(true), ec);
        ec = {};
      }
      http::async_write(conn->stream, req, [&](beast::error_code error, std::size_t) { ec = error; });
      run(*conn);
      if (ec) {
        if (reused && ec != beast::error::timeout) continue;
        return TransportError{"send to " + e.base + ": " + ec.message(), false};
      }
      http::response_parser<http::string_body> parser;
      parser.body_limit(kMaxResponseBytes);
      conn->buffer.clear();
      http::async_read(conn->stream, conn->buffer, parser, [&](beast::error_code error, std::size_t) { ec = error; });
      run(*conn);
      if (ec) {
        const bool nothing_arrived = !parser.got_some();
        if (reused && nothing_arrived && ec != beast::error::timeout) continue;
        return TransportError{"read from " + e.base + ": " + ec.message(), false};
      }
      auto res = parser.release();
      Reply reply;
      reply.status = static_cast<int>(res.result_int());
      if (auto it = res.find(http::field::retry_after); it != res.end()) {
        try {
          reply.retry_after_s = std::stod(std::string(it->value()));
        } catch (const std::exception&) {
          reply.retry_after_s = 0;
        }
      }
      reply.body = std::move(res.body());
      if (res.keep_alive()) {
        conn->stream.expires_never();
        return_connection(e, std::move(conn));
      }
      return reply;
    }
    return TransportError{"connection to " + e.base + " failed twice", false};
  }

  // Sends with retries, backoff and failover. Returns the first reply that is not worth retrying
  // (anything but 429/503), or the last problem as a TransportError.
  std::variant<Reply, TransportError> send_with_retries(http::verb verb, const std::string& target,
                                                        const std::string& body) {
    std::string last_problem = "no attempt made";
    std::size_t avoid = endpoints.size();
    for (int attempt = 1; attempt <= config.max_attempts; ++attempt) {
      const std::size_t index = pick(avoid);
      Endpoint& e = *endpoints[index];
      ++e.in_flight;
      auto outcome = exchange(e, verb, target, body);
      --e.in_flight;
      double wait_s = backoff_s(attempt);
      if (auto* error = std::get_if<TransportError>(&outcome)) {
        last_problem = error->message;
        if (error->connect_failed)
          e.down_until_ns = now_ns() + static_cast<std::int64_t>(wait_s * 1e9);
      } else {
        auto& reply = std::get<Reply>(outcome);
        if (reply.status != 429 && reply.status != 503) return std::move(reply);
        last_problem = describe_error(reply.status, reply.body) + " (from " + e.base + ")";
        if (reply.retry_after_s > 0) wait_s = std::max(wait_s, std::min(reply.retry_after_s, config.backoff_max_s));
        if (attempt == config.max_attempts) return std::move(reply);
      }
      avoid = index;
      if (attempt < config.max_attempts)
        std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
    }
    return TransportError{"gave up after " + std::to_string(config.max_attempts) + " attempts; last: " + last_problem,
                          false};
  }

  std::size_t current_batch_limit() {
    if (auto limit = batch_limit.load()) return limit;
    for (auto& e : endpoints) {
      auto outcome = exchange(*e, http::verb::get, "/v1/limits", "");
      if (auto* reply = std::get_if<Reply>(&outcome); reply && reply->status == 200) {
        const json j = json::parse(reply->body, nullptr, false);
        if (j.is_object() && j.contains("max_batch_items") && j["max_batch_items"].is_number_unsigned() &&
            j["max_batch_items"].get<std::size_t>() > 0) {
          batch_limit = j["max_batch_items"].get<std::size_t>();
          return batch_limit;
        }
      }
    }
    return kFallbackBatchItems;  // not cached: the next call asks again
  }

  // Grades items[begin, end) as one batch request (split further if the server says it is too
  // big); writes exactly one outcome per item into `out`.
  void process_piece(const std::vector<FeedbackItem>& items, std::size_t begin, std::size_t end,
                     std::vector<FeedbackOutcome>& out) {
    if (begin >= end) return;
    json request = {{"items", json::array()}};
    for (std::size_t i = begin; i < end; ++i) request["items"].push_back(item_to_json(items[i]));
    auto fail_all = [&](const std::string& why) {
      for (std::size_t i = begin; i < end; ++i) out[i] = FeedbackOutcome{false, json(), why};
    };
    std::string body;
    try {
      body = request.dump(-1, ' ', false, json::error_handler_t::strict);
    } catch (const json::exception& e) {
      // A response with invalid UTF-8: send the items one by one so only the bad one fails.
      if (end - begin == 1) return fail_all(std::string("cannot encode the item as JSON: ") + e.what());
      for (std::size_t i = begin; i < end; ++i) process_piece(items, i, i + 1, out);
      return;
    }

    auto outcome = send_with_retries(http::verb::post, "/v1/feedback:batch", body);
    if (auto* error = std::get_if<TransportError>(&outcome)) return fail_all(error->message);
    auto& reply = std::get<Reply>(outcome);
    const std::string code = error_code_of(reply.body);
    if ((reply.status == 413 || (reply.status == 422 && code == "batch_too_large")) && end - begin > 1) {
      const json j = json::parse(reply.body, nullptr, false);
      std::size_t limit = (end - begin) / 2;
      if (j.is_object() && j.contains("error") && j["error"].contains("limit") &&
          j["error"]["limit"].is_number_unsigned() && reply.status == 422)
        limit = std::max<std::size_t>(1, j["error"]["limit"].get<std::size_t>());
      if (reply.status == 422) batch_limit = limit;
      for (std::size_t piece = begin; piece < end; piece += limit)
        process_piece(items, piece, std::min(end, piece + limit), out);
      return;
    }
    if (reply.status != 200) return fail_all(describe_error(reply.status, reply.body));
    const json parsed = json::parse(reply.body, nullptr, false);
    if (!parsed.is_object() || !parsed.contains("results") || !parsed["results"].is_array() ||
        parsed["results"].size() != end - begin)
      return fail_all("the server's batch answer does not hold exactly " + std::to_string(end - begin) + " results");
    for (std::size_t i = begin; i < end; ++i) {
      const json& result = parsed["results"][i - begin];
      if (result.is_object() && result.contains("error")) {
        out[i] = FeedbackOutcome{false, json(), describe_error(result["error"].value("status", 0), dump_error(result))};
      } else {
        out[i] = FeedbackOutcome{true, result, ""};
      }
    }
  }

  static std::string dump_error(const json& result) { return result.dump(); }
};

FeedbackClient::FeedbackClient(ClientConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
FeedbackClient::~FeedbackClient() = default;

std::vector<FeedbackOutcome> FeedbackClient::feedback(const std::vector<FeedbackItem>& items) {
  std::vector<FeedbackOutcome> out(items.size());
  if (items.empty()) return out;
  const std::size_t limit = impl_->current_batch_limit();
  std::vector<std::pair<std::size_t, std::size_t>> pieces;
  for (std::size_t begin = 0; begin < items.size(); begin += limit)
    pieces.emplace_back(begin, std::min(items.size(), begin + limit));

  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t p = next++; p < pieces.size(); p = next++) {
      try {
        impl_->process_piece(items, pieces[p].first, pieces[p].second, out);
      } catch (const std::exception& e) {
        for (std::size_t i = pieces[p].first; i < pieces[p].second; ++i)
          out[i] = FeedbackOutcome{false, json(), std::string("client error: ") + e.what()};
      }
    }
  };
  const std::size_t threads = std::min(pieces.size(), impl_->config.max_concurrent_requests);
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  return out;
}

FeedbackOutcome FeedbackClient::feedback_one(const FeedbackItem& item) {
  std::string body;
  try {
    body = item_to_json(item).dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    return {false, json(), std::string("cannot encode the item as JSON: ") + e.what()};
  }
  auto outcome = impl_->send_with_retries(http::verb::post, "/v1/feedback", body);
  if (auto* error = std::get_if<TransportError>(&outcome)) return {false, json(), error->message};
  auto& reply = std::get<Reply>(outcome);
  if (reply.status != 200) return {false, json(), describe_error(reply.status, reply.body)};
  json result = json::parse(reply.body, nullptr, false);
  if (!result.is_object()) return {false, json(), "the server's answer is not a JSON object"};
  return {true, std::move(result), ""};
}

json FeedbackClient::get_json(const std::string& path) {
  auto outcome = impl_->send_with_retries(http::verb::get, path, "");
  if (auto* error = std::get_if<TransportError>(&outcome)) throw std::runtime_error("GET " + path + ": " + error->message);
  auto& reply = std::get<Reply>(outcome);
  if (reply.status != 200) throw std::runtime_error("GET " + path + ": " + describe_error(reply.status, reply.body));
  json j = json::parse(reply.body, nullptr, false);
  if (j.is_discarded()) throw std::runtime_error("GET " + path + ": the answer is not JSON");
  return j;
}

}  // namespace distil::env
