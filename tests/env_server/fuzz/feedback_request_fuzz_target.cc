#include "tests/env_server/fuzz/feedback_request_fuzz_target.h"

#include <string_view>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "env_server/feedback_request.h"
#include "env_server/json_input.h"

namespace distil::env::fuzz {
namespace {

namespace http = boost::beast::http;

const TaskStore& store() {
  static const TaskStore tasks = [] {
    TaskStore s;
    s.add(tasks::task_from_json(
        {{"id", "m"}, {"domain", "math"}, {"prompt", "p"}, {"answer", "42"}}));
    s.add(tasks::task_from_json({{"id", "c"},
                                 {"domain", "code"},
                                 {"prompt", "p"},
                                 {"tests", {{{"input", "1"}, {"output", "1"}, {"type", "stdin"}}}}}));
    s.add(tasks::task_from_json(
        {{"id", "s"}, {"domain", "science"}, {"prompt", "p"}, {"choices", {"a", "b"}}, {"answer", "A"}}));
    return s;
  }();
  return tasks;
}

RequestLimits small_limits() {
  RequestLimits l;
  l.max_body_bytes = 64 << 10;
  l.max_header_bytes = 4 << 10;
  l.max_json_depth = 16;
  l.max_string_bytes = 4 << 10;
  l.max_batch_items = 8;
  return l;
}

void validate_body(std::string_view body, const RequestLimits& limits) {
  try {
    const auto j = parse_json_body(body, limits);
    if (j.is_object() && j.contains("items"))
      (void)validate_feedback_batch(j, limits, store(), graders::Registry::builtin(), {});
    else
      (void)validate_feedback_item(j, "", store(), graders::Registry::builtin(), {});
  } catch (const ApiError& e) {
    // An expected rejection; it must still serialise (the server sends it).
    (void)dump_json(e.to_json());
  }
}

}  // namespace

void feedback_request_one_input(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return;
  const auto limits = small_limits();
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) return validate_body(rest, limits);

  http::request_parser<http::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
  parser.body_limit(limits.max_body_bytes);
  parser.eager(true);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
  if (ec || !parser.is_done()) return;
  validate_body(parser.get().body(), limits);
}

}  // namespace distil::env::fuzz
