#include "trainer/teacher.h"

#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/version.hpp>

namespace distil::trainer {

std::string strip_reasoning(const std::string& text) {
  std::string out;
  std::size_t pos = 0;
  while (true) {
    const auto open = text.find("<think>", pos);
    if (open == std::string::npos) {
      out += text.substr(pos);
      break;
    }
    out += text.substr(pos, open - pos);
    const auto close = text.find("</think>", open);
    if (close == std::string::npos) break;
    pos = close + 8;
  }
  const auto first = out.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = out.find_last_not_of(" \t\r\n");
  return out.substr(first, last - first + 1);
}

std::string fill_template(std::string tmpl, const std::vector<std::pair<std::string, std::string>>& values) {
  // One left-to-right scan so that substituted text is never re-scanned for placeholders (a model
  // response containing "{feedback}" stays literal).
  std::string out;
  std::size_t pos = 0;
  while (pos < tmpl.size()) {
    bool replaced = false;
    if (tmpl[pos] == '{') {
      for (const auto& [name, value] : values) {
        const std::string key = "{" + name + "}";
        if (tmpl.compare(pos, key.size(), key) == 0) {
          out += value;
          pos += key.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += tmpl[pos++];
  }
  return out;
}

const char* to_string(ContextKind kind) {
  switch (kind) {
    case ContextKind::sibling: return "sibling";
    case ContextKind::feedback: return "feedback";
    case ContextKind::reference: return "reference";
    case ContextKind::own_response: return "own_response";
    case ContextKind::masked: return "masked";
  }
  return "masked";
}

TeacherContext teacher_context(const TeacherSection& config, const std::string& mode, const std::string& prompt,
                               const std::vector<RolloutView>& group, std::size_t index,
                               const std::optional<std::string>& reference) {
  if (index >= group.size()) throw std::out_of_range("teacher_context: rollout index outside its group");
  auto solution_text = [&](const std::string& response) {
    return config.strip_reasoning ? strip_reasoning(response) : response;
  };
  auto render = [&](ContextKind kind, const std::string& solution, const std::string& feedback) {
    return TeacherContext{kind, fill_template(config.reprompt_template,
                                              {{"prompt", prompt}, {"solution", solution}, {"feedback", feedback}})};
  };
  if (mode == "reference") {
    if (!reference || reference->empty()) return {};
    return render(ContextKind::reference, fill_template(config.reference_template, {{"reference", *reference}}), "");
  }
  for (std::size_t j = 0; j < group.size(); ++j) {
    if (j == index || !group[j].passed) continue;
    const std::string other = solution_text(group[j].response);
    if (other.empty()) continue;
    return render(ContextKind::sibling, fill_template(config.solution_template, {{"response", other}}), "");
  }
  const RolloutView& self = group[index];
  if (self.passed) {
    // Never "feedback from your unsuccessful earlier attempt" on a right answer: that context
    // teaches the teacher to move away from it.
    const std::string own = solution_text(self.response);
    if (config.passed_without_sibling != "own_response" || own.empty()) return {};
    return render(ContextKind::own_response, fill_template(config.solution_template, {{"response", own}}), "");
  }
  const bool usable = !self.feedback.empty() && (self.informative || config.uninformative_feedback == "use");
  if (!usable) return {};
  return render(ContextKind::feedback, "", fill_template(config.feedback_template, {{"feedback", self.feedback}}));
}

std::optional<std::string> teacher_message(const TeacherSection& config, const std::string& mode,
                                           const std::string& prompt,
                                           const std::vector<RolloutView>& group, std::size_t index,
                                           const std::optional<std::string>& reference) {
  return teacher_context(config, mode, prompt, group, index, reference).message;
}

namespace {

class LocalTeacher : public TeacherScorer {
 public:
  LocalTeacher(model::CausalLM model, ScoringLimits limits) : model_(std::move(model)), limits_(limits) {}
  PositionTopK topk(const TokenRows& prompts, const TokenRows& responses, int64_t k) override {
    return response_topk(model_, prompts, responses, limits_.pad_id, k, limits_.chunk_tokens,
                         limits_.token_budget);
  }
  torch::Tensor logprobs_at(const TokenRows& prompts, const TokenRows& responses,
                            const torch::Tensor& ids) override {
    return response_logprobs_at(model_, prompts, responses, ids, limits_.pad_id, limits_.chunk_tokens,
                                limits_.token_budget);
  }

 private:
  model::CausalLM model_;
  ScoringLimits limits_;
};

struct Url {
  std::string host, port, target;
};

Url parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) {
    throw std::invalid_argument("teacher.remote_url: only http:// URLs are supported: " + url);
  }
  const auto rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  Url out;
  out.target = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = authority.rfind(':');
  out.host = colon == std::string::npos ? authority : authority.substr(0, colon);
  out.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  if (out.host.empty()) throw std::invalid_argument("teacher.remote_url: no host in " + url);
  return out;
}

class RemoteTeacher : public TeacherScorer {
 public:
  RemoteTeacher(const std::string& url, double timeout_s, int64_t vocab_size)
      : url_(parse_url(url)), timeout_(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000))),
        vocab_size_(vocab_size) {}

  PositionTopK topk(const TokenRows& prompts, const TokenRows& responses, int64_t k) override {
    std::vector<torch::Tensor> ids, logp;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      nlohmann::json request = {{"prompt_tokens", prompts[i]}, {"response_tokens", responses[i]},
                                {"top_k", k}};
      auto reply = post(request.dump());
      nlohmann::json parsed;
      try {
        parsed = nlohmann::json::parse(reply);
      } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error("remote teacher: reply is not JSON: " + std::string(e.what()));
      }
      auto one = parse_remote_topk(parsed, responses[i].size(), k, vocab_size_);
      ids.push_back(one.ids);
      logp.push_back(one.logp);
    }
    if (ids.empty()) return {torch::zeros({0, k}, torch::kLong), torch::zeros({0, k})};
    return {torch::cat(ids), torch::cat(logp)};
  }

  torch::Tensor logprobs_at(const TokenRows&, const TokenRows&, const torch::Tensor&) override {
    throw std::runtime_error("a remote teacher returns only its own top-k; it cannot score given ids");
  }

 private:
  std::string post(const std::string& body) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    boost::asio::io_context io;
    boost::asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(timeout_);
    stream.connect(resolver.resolve(url_.host, url_.port));
    http::request<http::string_body> req{http::verb::post, url_.target, 11};
    req.set(http::field::host, url_.host);
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(512u << 20);
    http::read(stream, buffer, parser);
    beast::error_code ec;
    stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    const auto& res = parser.get();
    if (res.result_int() != 200) {
      throw std::runtime_error("remote teacher: HTTP " + std::to_string(res.result_int()) + ": " +
                               res.body().substr(0, 300));
    }
    return res.body();
  }

  Url url_;
  std::chrono::milliseconds timeout_;
  int64_t vocab_size_;
};

}  // namespace

PositionTopK parse_remote_topk(const nlohmann::json& reply, std::size_t response_length, int64_t k,
                               int64_t vocab_size) {
  auto fail = [](const std::string& field, const std::string& problem) {
    throw std::runtime_error("remote teacher reply: " + field + ": " + problem);
  };
  if (!reply.is_object()) fail("<root>", "expected an object");
  for (const char* field : {"topk_ids", "topk_logprobs"}) {
    if (!reply.contains(field) || !reply[field].is_array()) fail(field, "missing or not an array");
    if (reply[field].size() != response_length) {
      fail(field, "has " + std::to_string(reply[field].size()) + " rows for " +
                      std::to_string(response_length) + " response tokens");
    }
  }
  const int64_t rows = static_cast<int64_t>(response_length);
  auto ids = torch::zeros({rows, k}, torch::kLong);
  auto logp = torch::zeros({rows, k}, torch::kFloat);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto logp_a = logp.accessor<float, 2>();
  for (int64_t t = 0; t < rows; ++t) {
    const auto& id_row = reply["topk_ids"][t];
    const auto& lp_row = reply["topk_logprobs"][t];
    const std::string where = "[" + std::to_string(t) + "]";
    if (!id_row.is_array() || static_cast<int64_t>(id_row.size()) != k) {
      fail("topk_ids" + where, "expected " + std::to_string(k) + " ids");
    }
    if (!lp_row.is_array() || static_cast<int64_t>(lp_row.size()) != k) {
      fail("topk_logprobs" + where, "expected " + std::to_string(k) + " log-probs");
    }
    std::set<int64_t> seen;
    double mass = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      if (!id_row[j].is_number_integer()) fail("topk_ids" + where, "not an integer");
      const int64_t id = id_row[j].get<int64_t>();
      if (id < 0 || id >= vocab_size) fail("topk_ids" + where, "id " + std::to_string(id) + " outside the vocabulary");
      if (!seen.insert(id).second) fail("topk_ids" + where, "duplicate id " + std::to_string(id));
      if (!lp_row[j].is_number()) fail("topk_logprobs" + where, "not a number");
      const double lp = lp_row[j].get<double>();
      if (!std::isfinite(lp) || lp > 1e-6) fail("topk_logprobs" + where, "must be finite and <= 0");
      mass += std::exp(lp);
      ids_a[t][j] = id;
      logp_a[t][j] = static_cast<float>(std::min(lp, 0.0));
    }
    if (mass > 1.0 + 1e-3) fail("topk_logprobs" + where, "probabilities sum to more than 1");
  }
  return {ids, logp};
}

std::unique_ptr<TeacherScorer> make_local_teacher(model::CausalLM model, ScoringLimits limits) {
  return std::make_unique<LocalTeacher>(std::move(model), limits);
}

std::unique_ptr<TeacherScorer> make_remote_teacher(const std::string& url, double timeout_s,
                                                   int64_t vocab_size) {
  return std::make_unique<RemoteTeacher>(url, timeout_s, vocab_size);
}

void ema_update(model::CausalLM& teacher, model::CausalLM& student, double rate) {
  torch::NoGradGuard no_grad;
  auto source = student->named_parameters();
  for (auto& item : teacher->named_parameters()) {
    const auto* from = source.find(item.key());
    if (!from) throw std::logic_error("ema_update: parameter " + item.key() + " missing in the student");
    item.value().mul_(1.0 - rate).add_(from->to(item.value().dtype()), rate);
  }
}

model::CausalLM clone_model(model::CausalLM& source) {
  auto params = source->named_parameters();
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;
  for (const auto& p : params) {
    device = p.value().device();
    dtype = p.value().scalar_type();
    break;
  }
  auto copy = model::make_random(source->config(), 0);
  copy->to(device, dtype);
  copy->set_compute_dtype(source->compute_dtype());
  torch::NoGradGuard no_grad;
  for (auto& item : copy->named_parameters()) {
    const auto* from = params.find(item.key());
    if (!from) throw std::logic_error("clone_model: parameter " + item.key() + " missing");
    item.value().copy_(*from);
  }
  for (auto& p : copy->parameters()) p.set_requires_grad(false);
  return copy;
}

}  // namespace distil::trainer
