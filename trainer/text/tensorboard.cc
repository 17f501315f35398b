#include "trainer/text/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>

namespace distil::text {
namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);
    table[i] = crc;
  }
  return table;
}
constexpr auto kCrc32cTable = make_crc32c_table();

// --- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) -------------------
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out += static_cast<char>((value & 0x7F) | 0x80);
    value >>= 7;
  }
  out += static_cast<char>(value);
}

void put_key(std::string& out, uint32_t field, WireType type) {
  put_varint(out, (uint64_t{field} << 3) | type);
}

void put_little_endian(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xFF);
}

void put_double(std::string& out, uint32_t field, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed64);
  put_little_endian(out, bits, 8);
}

void put_float(std::string& out, uint32_t field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_key(out, field, kFixed32);
  put_little_endian(out, bits, 4);
}

void put_int64(std::string& out, uint32_t field, int64_t value) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(value));  // int64: two's complement, 10 bytes if negative
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Event fields (tensorboard/compat/proto/event.proto).
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5,
                   kEventSessionLog = 7;
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;
constexpr uint32_t kSessionLogStatus = 1, kSessionLogStart = 1;

std::string event_header(double wall_time, int64_t step) {
  std::string out;
  put_double(out, kEventWallTime, wall_time);
  put_int64(out, kEventStep, step);
  return out;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void flatten(const nlohmann::json& j, const std::string& prefix, Scalars& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string tag = prefix.empty() ? it.key() : prefix + "/" + it.key();
    if (it->is_object()) {
      flatten(*it, tag, out);
    } else if (it->is_number() && std::isfinite(it->get<double>())) {
      out.emplace_back(tag, static_cast<float>(it->get<double>()));
    }
  }
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) crc = (crc >> 8) ^ kCrc32cTable[(crc ^ byte) & 0xFF];
  return crc ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord(std::string_view data) {
  std::string length;
  put_little_endian(length, data.size(), 8);
  std::string out = length;
  put_little_endian(out, masked_crc32c(length), 4);
  out.append(data);
  put_little_endian(out, masked_crc32c(data), 4);
  return out;
}

std::string encode_file_version_event(double wall_time, int64_t step) {
  std::string out = event_header(wall_time, step);
  put_bytes(out, kEventFileVersion, "brain.Event:2");
  return out;
}

std::string encode_session_start_event(double wall_time, int64_t step) {
  std::string session_log;
  put_key(session_log, kSessionLogStatus, kVarint);
  put_varint(session_log, kSessionLogStart);
  std::string out = event_header(wall_time, step);
  put_bytes(out, kEventSessionLog, session_log);
  return out;
}

std::string encode_scalars_event(double wall_time, int64_t step, const Scalars& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, kValueTag, tag);
    put_float(v, kValueSimpleValue, value);
    put_bytes(summary, kSummaryValue, v);
  }
  std::string out = event_header(wall_time, step);
  put_bytes(out, kEventSummary, summary);
  return out;
}

Scalars tensorboard_scalars(const nlohmann::json& record) {
  Scalars out;
  if (!record.is_object() || record.value("failed", false)) return out;
  nlohmann::json values = record;
  values.erase("step");
  if (values.contains("eval") && values["eval"].is_object()) {
    flatten(values, "", out);  // "eval/avg@n", ...
  } else {
    flatten(values, "train", out);
  }
  return out;
}

EventFileWriter::EventFileWriter(const std::filesystem::path& dir,
                                 std::optional<int64_t> purge_from_step) {
  const auto seconds = static_cast<long long>(now_seconds());
  const std::string base = "events.out.tfevents." + std::to_string(seconds) + "." + host_name();
  // O_EXCL: never append to (or clobber) another writer's file, e.g. a resume in the same second.
  for (int suffix = 0; fd_ < 0; ++suffix) {
    path_ = dir / (suffix == 0 ? base : base + "." + std::to_string(suffix));
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0 && (errno != EEXIST || suffix >= 1000)) {
      throw TensorBoardError("cannot create TensorBoard event file " + path_.string() + ": " +
                             std::strerror(errno) +
                             " (train.tensorboard=false turns TensorBoard output off)");
    }
  }
  const double wall_time = now_seconds();
  append(encode_file_version_event(wall_time, purge_from_step.value_or(0)));
  if (purge_from_step) append(encode_session_start_event(wall_time, *purge_from_step));
}

EventFileWriter::~EventFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void EventFileWriter::add_scalars(int64_t step, const Scalars& scalars) {
  if (scalars.empty()) return;
  append(encode_scalars_event(now_seconds(), step, scalars));
}

void EventFileWriter::append(const std::string& event) {
  const std::string record = tfrecord(event);
  std::size_t done = 0;
  while (done < record.size()) {
    const ssize_t n = ::write(fd_, record.data() + done, record.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw TensorBoardError("cannot write TensorBoard event file " + path_.string() + ": " +
                             (n < 0 ? std::strerror(errno) : "nothing written"));
    }
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace distil::text
