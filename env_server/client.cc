#include "env_server/client.h"

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
  // Down: the last exchange failed (no answer, a timeout, a 5xx, not a distil server); avoided
  // until the prober sees its /readyz answer 200.
  std::atomic<bool> down{false};
  std::atomic<std::int64_t> requests{0}, failures{0};
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


json item_to_json(const FeedbackItem& item) {
  json j = json::object();
  if (item.task) j["task"] = *item.task;
  else j["task_id"] = item.task_id;
  j["response"] = item.response;
  if (!item.options.is_null() && !(item.options.is_object() && item.options.empty())) j["options"] = item.options;
  return j;
}

// A body that is not ours (an HTML error page, a proxy's text) as one short line: tags dropped,
// whitespace collapsed, at most 120 characters.
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

// The distil-env error document {"error": {"code": ...}}, or null.
const json* distil_error(const json& j) {
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("code") &&
      j["error"]["code"].is_string())
    return &j["error"];
  return nullptr;
}

// "HTTP 404 unknown_task: no task with id 'x' is loaded"
std::string describe_error(int status, const std::string& body) {
  std::string text = "HTTP " + std::to_string(status);
  const json j = json::parse(body, nullptr, false);
  if (const json* e = distil_error(j)) {
    text += " " + (*e)["code"].get<std::string>();
    if (e->contains("message") && (*e)["message"].is_string()) text += ": " + (*e)["message"].get<std::string>();
  } else if (!body.empty()) {
    text += ": " + one_line(body);
  }
  return text;
}

// An answer this endpoint gives whatever the request: the server is broken (5xx other than the
// overload 503), or it is not a distil-env server (any status with a body that is not our error
// document, e.g. a web server's 404 page). Worth trying another endpoint; not the item's fault.
bool endpoint_fault(int status, const std::string& body) {
  if (status == 200 || status == 429 || status == 503) return false;
  if (status >= 500) return true;
  return distil_error(json::parse(body, nullptr, false)) == nullptr;
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

  // The prober: one thread, probing down endpoints' /readyz.
  std::mutex probe_mutex;
  std::condition_variable probe_wake;
  bool stopping = false;
  std::thread prober;

  explicit Impl(ClientConfig c) : config(std::move(c)) {
    if (config.endpoints.empty()) throw std::invalid_argument("ClientConfig.endpoints: give at least one endpoint");
    if (config.max_attempts < 1) throw std::invalid_argument("ClientConfig.max_attempts: must be at least 1");
    if (!(config.request_timeout_s > 0)) throw std::invalid_argument("ClientConfig.request_timeout_s: must be > 0");
    if (!(config.overload_wait_s >= 0)) throw std::invalid_argument("ClientConfig.overload_wait_s: must be >= 0");
    if (!(config.probe_interval_s > 0)) throw std::invalid_argument("ClientConfig.probe_interval_s: must be > 0");
    if (!(config.probe_timeout_s > 0)) throw std::invalid_argument("ClientConfig.probe_timeout_s: must be > 0");
    for (const auto& url : config.endpoints) {
      auto e = std::make_unique<Endpoint>();
      parse_base_url(url, *e);
      endpoints.push_back(std::move(e));
    }
    if (config.max_concurrent_requests == 0) config.max_concurrent_requests = 4 * endpoints.size();
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
    if (!e.down.exchange(true)) {
      config.log("endpoint " + e.base + " is down (" + why + "); sending work elsewhere and probing its /readyz");
    }
  }

  void mark_up(Endpoint& e) {
    if (e.down.exchange(false)) config.log("endpoint " + e.base + " is back (/readyz answered 200)");
  }

  // Every probe_interval_s, each down endpoint's /readyz once (on a fresh connection, with its
  // own short timeout, so a stopped server costs the prober, never a request).
  void probe_loop() {
    std::unique_lock lock(probe_mutex);
    while (!probe_wake.wait_for(lock, std::chrono::duration<double>(config.probe_interval_s), [&] { return stopping; })) {
      lock.unlock();
      for (auto& e : endpoints) {
        if (!e->down.load()) continue;
        auto outcome = exchange(*e, http::verb::get, "/readyz", "", config.probe_timeout_s, /*pooled=*/false);
        if (auto* reply = std::get_if<Reply>(&outcome); reply && reply->status == 200) mark_up(*e);
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
    if (e.idle.size() < 64) e.idle.push_back(std::move(c));
  }

  // Runs the io_context of `c` until the pending operation completes.
  static void run(Connection& c) {
    c.ioc.restart();
    c.ioc.run();
  }

  // One HTTP exchange; a Reply, or a TransportError when no answer came.
  // timeout_s 0: config.request_timeout_s. pooled: reuse and keep keep-alive connections.
  std::variant<Reply, TransportError> exchange(Endpoint& e, http::verb verb, const std::string& target,
                                               const std::string& body, double timeout_s = 0, bool pooled = true) {
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
      auto conn = fresh_try == 0 && pooled ? take_connection(e) : nullptr;
      const bool reused = conn != nullptr;
      if (!conn) conn = std::make_unique<Connection>();
      const auto timeout = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(timeout_s > 0 ? timeout_s : config.request_timeout_s));
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
      if (res.keep_alive() && pooled) {
        conn->stream.expires_never();
        return_connection(e, std::move(conn));
      }
      return reply;
    }
    return TransportError{"connection to " + e.base + " failed twice", false};
  }

  // Sends with retries, backoff and failover. Returns the first usable answer (a 2xx, or an
  // error the request itself caused, in distil-env's error document), the last overload answer
  // once overload_wait_s is spent, or the last problem as a TransportError once max_attempts
  // exchanges got no usable answer. An endpoint that fails is marked down (see pick()).
  // `expect_object`: a 200 whose body is not a JSON object is a fault of the endpoint too.
  std::variant<Reply, TransportError> send_with_retries(http::verb verb, const std::string& target,
                                                        const std::string& body, bool expect_object = false) {
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
      auto outcome = exchange(e, verb, target, body);
      --e.in_flight;
      double wait_s = backoff_s(std::min(faults + 1, 30));
      if (auto* error = std::get_if<TransportError>(&outcome)) {
        last_problem = error->message;
        mark_down(e, error->message);
        ++faults;
        ++e.failures;
      } else {
        auto& reply = std::get<Reply>(outcome);
        if (reply.status == 429 || reply.status == 503) {
          last_problem = describe_error(reply.status, reply.body) + " (from " + e.base + ")";
          // The server says when to come back; wait at least that long, within the budget.
          if (reply.retry_after_s > 0) wait_s = std::max(wait_s, reply.retry_after_s);
          wait_s = std::min(wait_s, config.overload_wait_s - overload_waited_s);
          if (wait_s <= 0) return std::move(reply);
          overload_waited_s += wait_s;
        } else {
          const bool not_object = expect_object && reply.status == 200 &&
                                  !json::parse(reply.body, nullptr, false).is_object();
          if (!endpoint_fault(reply.status, reply.body) && !not_object) {
            if (e.down.load()) mark_up(e);
            return std::move(reply);
          }
          last_problem = (not_object ? "HTTP 200 with a body that is not JSON: " + one_line(reply.body)
                                     : describe_error(reply.status, reply.body)) +
                         " (from " + e.base + ", not a distil-env answer)";
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
      const bool overloaded = std::holds_alternative<Reply>(outcome) &&
                              (std::get<Reply>(outcome).status == 429 || std::get<Reply>(outcome).status == 503);
      if (overloaded || !other_healthy) std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
    }
  }

  // The largest batch to send: the server's max_batch_items, and no more than its grading queue
  // holds (a batch is admitted whole or refused with 429, so a bigger one would never get in).
  std::size_t current_batch_limit() {
    if (auto limit = batch_limit.load()) return limit;
    for (auto& e : endpoints) {
      auto outcome = exchange(*e, http::verb::get, "/v1/limits", "");
      if (auto* reply = std::get_if<Reply>(&outcome); reply && reply->status == 200) {
        const json j = json::parse(reply->body, nullptr, false);
        if (j.is_object() && j.contains("max_batch_items") && j["max_batch_items"].is_number_unsigned() &&
            j["max_batch_items"].get<std::size_t>() > 0) {
          std::size_t limit = j["max_batch_items"].get<std::size_t>();
          if (j.contains("queue_capacity") && j["queue_capacity"].is_number_unsigned() &&
              j["queue_capacity"].get<std::size_t>() > 0)
            limit = std::min(limit, j["queue_capacity"].get<std::size_t>());
          if (config.max_batch_items > 0) limit = std::min(limit, config.max_batch_items);
          batch_limit = limit;
          return batch_limit;
        }
      }
    }
    // Not cached: the next call asks again.
    return config.max_batch_items > 0 ? config.max_batch_items : kFallbackBatchItems;
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

    auto outcome = send_with_retries(http::verb::post, "/v1/feedback:batch", body, /*expect_object=*/true);
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

std::vector<EndpointStats> FeedbackClient::endpoint_stats() const {
  std::vector<EndpointStats> out;
  for (const auto& e : impl_->endpoints) out.push_back({e->base, e->requests.load(), e->failures.load(), e->down.load()});
  return out;
}

std::vector<EndpointCheck> FeedbackClient::check_endpoints() {
  std::vector<EndpointCheck> checks;
  for (auto& e : impl_->endpoints) {
    EndpointCheck c;
    c.endpoint = e->base;
    auto health = impl_->exchange(*e, http::verb::get, "/healthz", "", impl_->config.probe_timeout_s, false);
    if (auto* error = std::get_if<TransportError>(&health)) {
      c.problem = "GET /healthz: " + error->message;
    } else {
      c.reachable = true;
      const Reply& reply = std::get<Reply>(health);
      const json body = json::parse(reply.body, nullptr, false);
      if (reply.status != 200 || !body.is_object() || body.value("status", "") != "ok") {
        c.problem = "GET /healthz: " + describe_error(reply.status, reply.body) + " (a distil-env server answers 200 {\"status\":\"ok\"})";
      } else {
        auto limits = impl_->exchange(*e, http::verb::get, "/v1/limits", "", impl_->config.probe_timeout_s, false);
        if (auto* error = std::get_if<TransportError>(&limits)) {
          c.problem = "GET /v1/limits: " + error->message;
        } else {
          const Reply& l = std::get<Reply>(limits);
          const json j = json::parse(l.body, nullptr, false);
          if (l.status == 401) c.problem = "GET /v1/limits: HTTP 401: the server needs a bearer token (env.auth_token_env)";
          else if (l.status != 200 || !j.is_object() || !j.contains("max_batch_items"))
            c.problem = "GET /v1/limits: " + describe_error(l.status, l.body) + " (no max_batch_items: not a distil-env server)";
          else c.distil = true;
        }
      }
    }
    if (!c.distil) impl_->mark_down(*e, c.problem);
    checks.push_back(std::move(c));
  }
  return checks;
}

void FeedbackClient::require_endpoints() {
  const auto checks = check_endpoints();
  std::string wrong, unreachable;
  bool any_good = false;
  for (const auto& c : checks) {
    any_good |= c.distil;
    if (c.distil) continue;
    (c.reachable ? wrong : unreachable) += "\n  " + c.endpoint + ": " + c.problem;
  }
  if (!wrong.empty())
    throw std::runtime_error("env.endpoints: these answer but are not distil-env feedback servers:" + wrong +
                             (unreachable.empty() ? "" : "\nand these do not answer:" + unreachable));
  if (!any_good) throw std::runtime_error("env.endpoints: no endpoint answers:" + unreachable);
}

}  // namespace distil::env
