// TensorBoard event files, written by hand (no TensorFlow, no protobuf library).
//
// An event file is a TFRecord file: each record is
//   uint64 length (little-endian), uint32 masked CRC32C of those 8 bytes, the data,
//   uint32 masked CRC32C of the data,
// with masked_crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8. Each record's data is a serialized
// `tensorboard.Event` (tensorboard/compat/proto/event.proto): wall_time (double, field 1), step
// (int64, 2), and one of file_version (string, 3: "brain.Event:2" in a file's first event),
// summary (Summary, 5) or session_log (SessionLog, 7). Summary{repeated Value value = 1},
// Value{string tag = 1; float simple_value = 2}; SessionLog{SessionStatus status = 1}, START = 1.
//
// The file is named events.out.tfevents.<unix-seconds>.<hostname>, TensorBoard's own pattern (it
// reads every file whose name contains "tfevents", in name order, so a later file sorts later).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::text {

class TensorBoardError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it.
uint32_t crc32c(std::string_view data);
// TFRecord's masked form of crc32c(data).
uint32_t masked_crc32c(std::string_view data);
// One TFRecord: length, masked CRC of the length, data, masked CRC of the data.
std::string tfrecord(std::string_view data);

using Scalars = std::vector<std::pair<std::string, float>>;

// Serialized tensorboard.Event messages (exposed for tests).
std::string encode_file_version_event(double wall_time, int64_t step);
std::string encode_session_start_event(double wall_time, int64_t step);
std::string encode_scalars_event(double wall_time, int64_t step, const Scalars& scalars);

// The scalars of one metrics.jsonl record as TensorBoard tags: every finite number, nested keys
// joined with "/". A step record's values go under "train/" ("train/loss",
// "train/time/total"); an evaluation record {"step", "eval": {...}} gives "eval/avg@n", ...
// "step" itself is the event's step, not a value. Booleans, strings and nulls are not scalars.
// A step that did not count ("failed": true) gives none: it is made again under the same number.
Scalars tensorboard_scalars(const nlohmann::json& record);

// Appends events to a new event file in `dir`. Every event is written with one write(2) when it is
// added, so a crash loses nothing that was added. Errors throw TensorBoardError naming the file.
class EventFileWriter {
 public:
  // Creates the file (a fresh one, never an existing one: a clash of names gets a ".<n>" suffix)
  // and writes its file_version event. With `purge_from_step` (a resumed run's first step), also a
  // SessionLog START at that step, TensorBoard's sign of a restart: its event loader then drops the
  // points at or after that step that earlier files hold (the steps made again from the
  // checkpoint), which is what PyTorch's SummaryWriter(purge_step=...) writes too.
  explicit EventFileWriter(const std::filesystem::path& dir,
                           std::optional<int64_t> purge_from_step = std::nullopt);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  // Nothing is written for an empty list.
  void add_scalars(int64_t step, const Scalars& scalars);
  const std::filesystem::path& path() const { return path_; }

 private:
  void append(const std::string& event);
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace distil::text
