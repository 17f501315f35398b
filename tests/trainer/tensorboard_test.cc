// TensorBoard event files (trainer/text/tensorboard.cc): CRC-32C known answers, the bytes of an
// event against protoc's own encoding, the files read back by an independent reader written from
// the format specifications and by the real crc32c + protobuf libraries (tfevents_peer.py).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/model/run_command.h"
#include "tests/trainer/tfevents_reader.h"
#include "trainer/text/tensorboard.h"

namespace distil::text {
namespace {
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(DISTIL_BINARY_DIR) / "tests" / "trainer" /
                       ("tensorboard-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(Crc32c, KnownAnswers) {
  // The CRC catalogue's check value for CRC-32C, and RFC 3720 (iSCSI) appendix B.4's vectors.
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending += static_cast<char>(i);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  // The independent bit-by-bit version agrees (it is what the test reader checks files with).
  EXPECT_EQ(test::bitwise_crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(masked_crc32c("123456789"), test::bitwise_masked_crc32c("123456789"));
  const uint32_t crc = 0xE3069283u;
  EXPECT_EQ(masked_crc32c("123456789"), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TfRecord, FramesLengthDataAndBothCrcs) {
  const std::string record = tfrecord("abc");
  ASSERT_EQ(record.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(record.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(record.substr(12, 3), "abc");
  auto u32 = [&](std::size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(record[at + i]);
    return v;
  };
  EXPECT_EQ(u32(8), test::bitwise_masked_crc32c(record.substr(0, 8)));
  EXPECT_EQ(u32(15), test::bitwise_masked_crc32c("abc"));
}

TEST(TensorBoardScalars, FlattensARecordIntoTags) {
  const auto step = tensorboard_scalars(nlohmann::json::parse(
      R"({"step": 3, "loss": 0.5, "objective": "distil", "update_applied": true, "accuracy": null,
          "time": {"total": 2.0, "teacher": 0.25}, "teacher_contexts": {"sibling": 4}})"));
  const Scalars expected_step = {{"train/loss", 0.5f},
                                 {"train/teacher_contexts/sibling", 4.0f},
                                 {"train/time/teacher", 0.25f},
                                 {"train/time/total", 2.0f}};
  EXPECT_EQ(step, expected_step);
  const auto eval = tensorboard_scalars(
      nlohmann::json::parse(R"({"step": 4, "eval": {"avg@n": 0.25, "pass@4": 1}})"));
  const Scalars expected_eval = {{"eval/avg@n", 0.25f}, {"eval/pass@4", 1.0f}};
  EXPECT_EQ(eval, expected_eval);
  // A step that did not count is made again under its number; a failed evaluation has no numbers.
  EXPECT_TRUE(
      tensorboard_scalars(nlohmann::json::parse(R"({"step": 2, "failed": true, "rollouts": 0})"))
          .empty());
  EXPECT_TRUE(tensorboard_scalars(nlohmann::json::parse(R"({"step": 2, "eval_failed": "6 of 6"})"))
                  .empty());
}

// protoc --encode (Google's own serializer) gives the same bytes for the same Event.
TEST(TensorBoardEvent, BytesMatchProtocEncoding) {
  if (system("command -v protoc >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "protoc not installed (Debian protobuf-compiler; scripts/setup.sh installs it)";
  const fs::path dir = fresh_dir("protoc");
  const fs::path proto_dir = fs::path(DISTIL_SOURCE_DIR) / "tests" / "trainer" / "data";
  auto protoc_encode = [&](const std::string& text_format) {
    std::ofstream(dir / "event.txt") << text_format;
    int status = 0;
    std::string bytes =
        test::run_command("protoc -I'" + proto_dir.string() + "' --encode=tensorboard.Event '" +
                              (proto_dir / "tensorboard_event.proto").string() + "' < '" +
                              (dir / "event.txt").string() + "'",
                          &status);
    EXPECT_EQ(status, 0) << text_format;
    return bytes;
  };
  EXPECT_EQ(
      encode_scalars_event(1700000000.25, 300, {{"train/loss", 0.5f}, {"eval/avg@n", -1.75e-3f}}),
      protoc_encode("wall_time: 1700000000.25 step: 300 summary { value { tag: 'train/loss' "
                    "simple_value: 0.5 } "
                    "value { tag: 'eval/avg@n' simple_value: -1.75e-3 } }"));
  // proto3 leaves out a field at its default (step 0); a parser reads the explicit 0 the same.
  EXPECT_EQ(encode_file_version_event(1.5, 7),
            protoc_encode("wall_time: 1.5 step: 7 file_version: 'brain.Event:2'"));
  EXPECT_EQ(encode_session_start_event(2.5, 9),
            protoc_encode("wall_time: 2.5 step: 9 session_log { status: START }"));
  fs::remove_all(dir);
}

TEST(EventFileWriter, WritesAFileBothReadersAccept) {
  const fs::path dir = fresh_dir("roundtrip");
  fs::path file;
  {
    EventFileWriter writer(dir);
    file = writer.path();
    writer.add_scalars(1, {{"train/loss", 1.25f}, {"train/lr", 1e-4f}});
    writer.add_scalars(2, {});  // nothing to show: no event
    writer.add_scalars(2, {{"train/loss", 0.75f}});
    writer.add_scalars(2, {{"eval/avg@n", 0.5f}});
  }
  const std::string name = file.filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  EXPECT_NE(name.find(std::string(".") + host), std::string::npos) << name;

  const auto events = test::read_event_file(file);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_FALSE(events[0].has_summary);
  EXPECT_EQ(events[1].step, 1);
  EXPECT_EQ(events[1].values, (Scalars{{"train/loss", 1.25f}, {"train/lr", 1e-4f}}));
  EXPECT_EQ(events[2].step, 2);
  EXPECT_EQ(events[3].values, (Scalars{{"eval/avg@n", 0.5f}}));
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& e : events) {
    EXPECT_GT(e.wall_time, 1.6e9);
    EXPECT_LE(e.wall_time, now);
  }

  const auto peer = test::run_peer_reader({file});
  if (!peer.skip_reason.empty()) GTEST_SKIP() << "real reader not installed: " << peer.skip_reason;
  const auto& peer_events = peer.files.at(0);
  ASSERT_EQ(peer_events.size(), 4u) << peer.files.dump();
  EXPECT_EQ(peer_events[0]["what"], "file_version");
  EXPECT_EQ(peer_events[0]["file_version"], "brain.Event:2");
  for (std::size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(peer_events[i]["what"], "summary");
    EXPECT_EQ(peer_events[i]["step"], events[i].step);
    EXPECT_EQ(peer_events[i]["wall_time"].get<double>(), events[i].wall_time);
    ASSERT_EQ(peer_events[i]["values"].size(), events[i].values.size());
    for (std::size_t v = 0; v < events[i].values.size(); ++v) {
      EXPECT_EQ(peer_events[i]["values"][v][0], events[i].values[v].first);
      EXPECT_EQ(peer_events[i]["values"][v][1].get<double>(),
                static_cast<double>(events[i].values[v].second));
    }
  }
  fs::remove_all(dir);
}

TEST(EventFileWriter, AResumeGetsANewFileThatPurgesTheStepsMadeAgain) {
  const fs::path dir = fresh_dir("resume");
  fs::path first, second;
  {
    EventFileWriter a(dir);
    a.add_scalars(1, {{"train/loss", 1.0f}});
    first = a.path();
  }
  {
    EventFileWriter b(dir, 2);  // the same second, most likely: a suffix keeps both files
    second = b.path();
    b.add_scalars(2, {{"train/loss", 0.5f}});
  }
  ASSERT_NE(first, second);
  EXPECT_EQ(test::event_files_in(dir), (std::vector<fs::path>{first, second}))
      << "TensorBoard reads files in name order";
  const auto events = test::read_event_file(second);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_EQ(events[1].session_status, 1) << "SessionLog START";
  EXPECT_EQ(events[1].step, 2);
  EXPECT_EQ(events[2].values, (Scalars{{"train/loss", 0.5f}}));

  const auto peer = test::run_peer_reader({first, second});
  if (!peer.skip_reason.empty()) GTEST_SKIP() << "real reader not installed: " << peer.skip_reason;
  ASSERT_EQ(peer.files.size(), 2u);
  EXPECT_EQ(peer.files[1][1]["what"], "session_log");
  EXPECT_EQ(peer.files[1][1]["status"], "START");
  EXPECT_EQ(peer.files[1][1]["step"], 2);
  fs::remove_all(dir);
}

TEST(EventFileWriter, ErrorsNameTheFile) {
  const fs::path missing = fresh_dir("errors") / "no-such-dir";
  try {
    EventFileWriter writer(missing);
    ADD_FAILURE() << "created an event file in a directory that does not exist";
  } catch (const TensorBoardError& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }

  // A write that really fails (as on a full disk): a file size limit makes write(2) fail with EFBIG.
  const fs::path dir = missing.parent_path();
  EventFileWriter writer(dir);
  rlimit old_limit{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  rlimit small = old_limit;
  small.rlim_cur = fs::file_size(writer.path()) + 8;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    writer.add_scalars(1, {{"train/loss", 1.0f}});
  } catch (const TensorBoardError& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old_limit);
  signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find(writer.path().string()), std::string::npos) << message;
  EXPECT_NE(message.find("too large"), std::string::npos) << message;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace distil::text
