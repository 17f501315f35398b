// Two readers of TensorBoard event files for tests, neither sharing code with the writer
// (trainer/text/tensorboard.cc):
//  - read_event_file: written here from the TFRecord and protobuf wire-format specifications, with
//    its own bit-by-bit CRC-32C (the writer uses a table);
//  - run_peer_reader: tfevents_peer.py, i.e. the real `crc32c` package and Google's protobuf
//    runtime (Debian python3-crc32c, python3-protobuf, protobuf-compiler's protoc).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::test {

struct ReadEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::optional<std::string> file_version;
  std::optional<int64_t> session_status;  // SessionLog.status (START = 1)
  bool has_summary = false;
  std::vector<std::pair<std::string, float>> values;  // Summary.value: (tag, simple_value)
};

inline uint32_t bitwise_crc32c(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

inline uint32_t bitwise_masked_crc32c(const std::string& data) {
  const uint32_t crc = bitwise_crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

// A protobuf message as (field number, wire type, payload) triples.
class WireReader {
 public:
  explicit WireReader(const std::string& bytes) : bytes_(bytes) {}
  bool done() const { return pos_ >= bytes_.size(); }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= bytes_.size()) throw std::runtime_error("truncated varint");
      const auto byte = static_cast<unsigned char>(bytes_[pos_++]);
      value |= uint64_t{byte & 0x7Fu} << shift;
      if (!(byte & 0x80)) return value;
    }
    throw std::runtime_error("varint longer than 10 bytes");
  }
  std::string take(std::size_t n) {
    if (pos_ + n > bytes_.size()) throw std::runtime_error("truncated field");
    std::string out = bytes_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  // Next field: its number and wire type; the value is read with the matching call below.
  std::pair<uint32_t, uint32_t> key() {
    const uint64_t k = varint();
    return {static_cast<uint32_t>(k >> 3), static_cast<uint32_t>(k & 7)};
  }
  double fixed64_double() {
    const std::string b = take(8);
    uint64_t bits = 0;
    for (int i = 7; i >= 0; --i) bits = (bits << 8) | static_cast<unsigned char>(b[i]);
    double v;
    std::memcpy(&v, &bits, 8);
    return v;
  }
  float fixed32_float() {
    const std::string b = take(4);
    uint32_t bits = 0;
    for (int i = 3; i >= 0; --i) bits = (bits << 8) | static_cast<unsigned char>(b[i]);
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }
  std::string length_delimited() { return take(varint()); }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        break;
      case 1:
        take(8);
        break;
      case 2:
        length_delimited();
        break;
      case 5:
        take(4);
        break;
      default:
        throw std::runtime_error("unknown wire type " + std::to_string(wire_type));
    }
  }

 private:
  const std::string& bytes_;
  std::size_t pos_ = 0;
};

inline ReadEvent decode_event(const std::string& data) {
  ReadEvent event;
  WireReader r(data);
  while (!r.done()) {
    const auto [field, type] = r.key();
    if (field == 1 && type == 1) {
      event.wall_time = r.fixed64_double();
    } else if (field == 2 && type == 0) {
      event.step = static_cast<int64_t>(r.varint());
    } else if (field == 3 && type == 2) {
      event.file_version = r.length_delimited();
    } else if (field == 5 && type == 2) {
      event.has_summary = true;
      const std::string summary = r.length_delimited();
      WireReader s(summary);
      while (!s.done()) {
        const auto [sf, st] = s.key();
        if (sf != 1 || st != 2) {
          s.skip(st);
          continue;
        }
        const std::string value = s.length_delimited();
        WireReader v(value);
        std::pair<std::string, float> tag_value{"", 0.0f};
        while (!v.done()) {
          const auto [vf, vt] = v.key();
          if (vf == 1 && vt == 2)
            tag_value.first = v.length_delimited();
          else if (vf == 2 && vt == 5)
            tag_value.second = v.fixed32_float();
          else
            v.skip(vt);
        }
        event.values.push_back(tag_value);
      }
    } else if (field == 7 && type == 2) {
      const std::string session_log = r.length_delimited();
      WireReader s(session_log);
      event.session_status = 0;
      while (!s.done()) {
        const auto [sf, st] = s.key();
        if (sf == 1 && st == 0)
          event.session_status = static_cast<int64_t>(s.varint());
        else
          s.skip(st);
      }
    } else {
      r.skip(type);
    }
  }
  return event;
}

// Throws std::runtime_error naming the offset of a bad record (length, CRC, protobuf).
inline std::vector<ReadEvent> read_event_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<ReadEvent> events;
  std::size_t pos = 0;
  auto u32 = [&](std::size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
    return v;
  };
  while (pos < bytes.size()) {
    const std::string where = path.string() + "@" + std::to_string(pos);
    if (pos + 12 > bytes.size()) throw std::runtime_error(where + ": truncated record header");
    const std::string length_bytes = bytes.substr(pos, 8);
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i)
      length = (length << 8) | static_cast<unsigned char>(length_bytes[i]);
    if (bitwise_masked_crc32c(length_bytes) != u32(pos + 8))
      throw std::runtime_error(where + ": length CRC mismatch");
    if (pos + 16 + length > bytes.size()) throw std::runtime_error(where + ": truncated record");
    const std::string data = bytes.substr(pos + 12, length);
    if (bitwise_masked_crc32c(data) != u32(pos + 12 + length))
      throw std::runtime_error(where + ": data CRC mismatch");
    events.push_back(decode_event(data));
    pos += 16 + length;
  }
  return events;
}

// The event files in `dir`, in the order TensorBoard reads them (by name).
inline std::vector<std::filesystem::path> event_files_in(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().find("tfevents") != std::string::npos)
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// What TensorBoard shows from these files, read in order: tag -> (step, value) points, where a
// SessionLog START at step s (a resumed run) first drops every point at or after s.
using Series = std::map<std::string, std::vector<std::pair<int64_t, float>>>;
inline Series shown_by_tensorboard(const std::vector<std::vector<ReadEvent>>& files) {
  Series series;
  for (const auto& events : files) {
    for (const auto& e : events) {
      if (e.session_status == 1) {
        for (auto& [tag, points] : series)
          std::erase_if(points, [&](const auto& p) { return p.first >= e.step; });
      }
      for (const auto& [tag, value] : e.values) series[tag].emplace_back(e.step, value);
    }
  }
  std::erase_if(series, [](const auto& kv) { return kv.second.empty(); });
  return series;
}

// The same from metrics.jsonl, flattened here on its own: a step record's numbers under "train/",
// an evaluation's under "eval/", nested keys joined by "/"; records of steps that did not count
// ("failed": true) left out.
inline Series expected_from_metrics(const std::filesystem::path& jsonl) {
  Series series;
  std::function<void(const nlohmann::json&, const std::string&, int64_t)> add =
      [&](const nlohmann::json& j, const std::string& prefix, int64_t step) {
        for (auto it = j.begin(); it != j.end(); ++it) {
          const std::string tag = prefix + "/" + it.key();
          if (it->is_object())
            add(*it, tag, step);
          else if (it->is_number())
            series[tag].emplace_back(step, static_cast<float>(it->get<double>()));
        }
      };
  std::ifstream in(jsonl);
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line);
    if (record.value("failed", false)) continue;
    const int64_t step = record.at("step").get<int64_t>();
    record.erase("step");
    if (record.contains("eval"))
      add(record["eval"], "eval", step);
    else
      add(record, "train", step);
  }
  return series;
}

struct PeerResult {
  std::string skip_reason;  // non-empty: the peer is not installed here (the test skips, saying so)
  nlohmann::json files;     // one list of events per file (tfevents_peer.py's output)
};

// Runs tfevents_peer.py (Debian's python3 with python3-protobuf and python3-crc32c, and protoc)
// over `files`. Throws when the peer ran and rejected a file.
inline PeerResult run_peer_reader(const std::vector<std::filesystem::path>& files) {
  PeerResult result;
  const std::string python = "/usr/bin/python3";
  if (system("command -v protoc >/dev/null 2>&1") != 0) {
    result.skip_reason =
        "protoc not installed (Debian protobuf-compiler; scripts/setup.sh installs it)";
    return result;
  }
  if (access(python.c_str(), X_OK) != 0) {
    result.skip_reason = python + " not found";
    return result;
  }
  const std::filesystem::path source =
      std::filesystem::path(DISTIL_SOURCE_DIR) / "tests" / "trainer";
  const std::filesystem::path generated =
      std::filesystem::temp_directory_path() / ("distil-tfevents-peer-" + std::to_string(getpid()));
  std::filesystem::create_directories(generated);
  const std::string protoc = "protoc -I'" + (source / "data").string() + "' --python_out='" +
                             generated.string() + "' '" +
                             (source / "data" / "tensorboard_event.proto").string() + "' 2>&1";
  if (system(protoc.c_str()) != 0) throw std::runtime_error("protoc failed: " + protoc);
  std::string command =
      python + " '" + (source / "tfevents_peer.py").string() + "' '" + generated.string() + "'";
  for (const auto& f : files) command += " '" + f.string() + "'";
  const std::filesystem::path err = generated / "stderr.txt";
  command += " 2>'" + err.string() + "'";
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + command);
  char buffer[65536];
  std::size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  const int status = pclose(pipe);
  std::ifstream err_in(err);
  const std::string err_text((std::istreambuf_iterator<char>(err_in)),
                             std::istreambuf_iterator<char>());
  std::filesystem::remove_all(generated);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
    result.skip_reason =
        "tfevents_peer.py: " + err_text +
        " (Debian python3-protobuf and python3-crc32c; scripts/setup.sh installs them)";
    return result;
  }
  if (status != 0)
    throw std::runtime_error("tfevents_peer.py rejected the event files: " + err_text);
  result.files = nlohmann::json::parse(out);
  return result;
}

// tfevents_peer.py's output as ReadEvents, to compare with read_event_file's.
inline std::vector<std::vector<ReadEvent>> peer_events(const nlohmann::json& files) {
  std::vector<std::vector<ReadEvent>> out;
  for (const auto& file : files) {
    auto& events = out.emplace_back();
    for (const auto& e : file) {
      ReadEvent event;
      event.wall_time = e.at("wall_time").get<double>();
      event.step = e.at("step").get<int64_t>();
      if (e["what"] == "file_version") event.file_version = e.at("file_version").get<std::string>();
      if (e["what"] == "session_log") event.session_status = e.at("status") == "START" ? 1 : 0;
      if (e["what"] == "summary") {
        event.has_summary = true;
        for (const auto& v : e.at("values"))
          event.values.emplace_back(v[0].get<std::string>(), v[1].get<float>());
      }
      events.push_back(event);
    }
  }
  return out;
}

}  // namespace distil::test
